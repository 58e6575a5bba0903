//! Any text → public and private key parsers: never panic; a parsed key prints back to the same
//! text's key, and any private key has a public key.
#![no_main]

use kilo_core::{Key, PrivateKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(key) = text.parse::<Key>() {
        assert_eq!(key.to_base64().parse::<Key>(), Ok(key));
        assert_eq!(key.to_base64().len(), 44);
    }
    if let Ok(private) = text.parse::<PrivateKey>() {
        let back = private.expose_base64().parse::<PrivateKey>();
        assert_eq!(back.as_ref(), Ok(&private));
        let _ = private.public_key();
        assert!(!format!("{private:?}").contains(&private.expose_base64()));
    }
});
