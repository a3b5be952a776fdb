// placeholder: the JS client is being written (issue 4)
export function connect() { throw new Error("not yet"); }
