//! The daemon's YAML configuration. A configuration that loads is valid, and written
//! back as YAML it loads to the same value; one that does not load says why.
#![no_main]

use leash::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text) {
        Ok(config) => {
            config.validate().expect("a loaded configuration is valid");
            let yaml = serde_yaml_ng::to_string(&config).expect("serializes");
            let again = Config::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("{text:?} written back as {yaml:?} fails: {e}"));
            assert_eq!(again, config, "{text:?} -> {yaml:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
