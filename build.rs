//! Turns `docs/openapi.yaml` (the API's description, written as YAML for people) into the
//! JSON the gateway serves at `/api/openapi.json`, once at build time: the binary carries no
//! YAML parser, and a spec that does not parse fails the build, not a request.

use std::path::Path;

fn main() {
    let spec = Path::new("docs/openapi.yaml");
    println!("cargo:rerun-if-changed={}", spec.display());
    let text = std::fs::read_to_string(spec).unwrap_or_else(|e| panic!("cannot read {}: {e}", spec.display()));
    let value: serde_json::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", spec.display()));
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    std::fs::write(&out, serde_json::to_string(&value).expect("JSON from YAML"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
