#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    idweb_fuzzing::run("claims_challenge", data);
});
