//! The TOML config loader, as `--config FILE` uses it: any text either
//! fails to parse or gives a configuration; a configuration either fails
//! validation with a message or is valid; a valid one printed with
//! `--print-config` reads back the same. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rchat::config::ServerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ServerConfig::from_toml(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let printed = config.to_toml();
    let again = ServerConfig::from_toml(&printed).expect("printed config reads back");
    assert_eq!(again, config, "{printed}");
});
