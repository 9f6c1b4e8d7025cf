//! Pipeline TOML -> `RawSpec::parse` (TOML, `--set` overrides, `${VAR}` expansion) ->
//! `validate` against the built-in stages (every table, key, type and stage parameter check).
//! Lines starting with `#set ` are passed as `--set` overrides. `run.images` is replaced by one
//! fixed photo so that the fuzzer does not walk the file system; every other key is the fuzzer's.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sets: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#set ").map(str::to_string))
        .collect();
    let Ok(mut raw) = srhost::spec::RawSpec::parse("fuzz.toml", text, &sets) else {
        return;
    };
    if let Some(toml::Value::Table(run)) = raw.table.get_mut("run") {
        let photo = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/images/coffee.png");
        run.insert("images".into(), toml::Value::String(photo.into()));
    }
    let registry = srhost::registry();
    // The built-in stages must be linked in, or every stage check would be skipped.
    assert!(registry.entries().count() >= 12, "built-in stages missing");
    let _ = raw.validate(&registry);
});
