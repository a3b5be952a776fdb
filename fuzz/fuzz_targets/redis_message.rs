//! A message from Redis (pub/sub channel message or stream entry envelope):
//! `broker::redis::decode_for_fuzzing`, which decodes and re-encodes it into client frames.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wsgate::broker::redis::decode_for_fuzzing(data);
});
