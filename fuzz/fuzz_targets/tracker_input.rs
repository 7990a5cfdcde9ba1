#![no_main]
// Fuzz target `tracker_input`: see crowd_fuzzing (../fuzzing/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = crowd_fuzzing::run("tracker_input", data);
});
