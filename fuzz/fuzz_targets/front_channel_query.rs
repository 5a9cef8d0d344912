#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    idweb_fuzzing::run("front_channel_query", data);
});
