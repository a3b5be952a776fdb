//! A message from Redis (a pub/sub message, and the same bytes as a stream entry's fields):
//! `broker::redis::wire::decode_for_fuzzing`, which decodes both and checks the frame's id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wsgate::fuzzing::decode_redis_message(data);
});
