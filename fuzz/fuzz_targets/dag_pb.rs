#![no_main]
// Fuzz target `dag_pb`: see crowd_fuzzing (../fuzzing/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = crowd_fuzzing::run("dag_pb", data);
});
