//! JSON bytes → `PeerSpec` → `validate` → `peer_from_spec` → `spec_from_peer`: never panics. An
//! exported spec always validates and, for a valid spec, translates back to the same peer; and a spec's JSON is
//! stable after one round.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kilo_core::peer_spec::{PeerSpec, peer_from_spec, spec_from_peer, validate};
use libfuzzer_sys::fuzz_target;

fn check(spec: &PeerSpec) {
    let valid = validate(spec).map_err(|e| e.to_string());
    let peer = peer_from_spec("peer", spec);
    let exported = spec_from_peer(&peer);
    assert_eq!(validate(&exported), Ok(()), "exported {exported:?} from {peer:?}");
    let again = peer_from_spec("peer", &exported);
    if valid.is_ok() {
        assert_eq!(again, peer, "exported as {exported:?}");
    }
    assert_eq!(spec_from_peer(&again), exported);

    let json = serde_json::to_string(spec).expect("a spec serialises");
    let back: PeerSpec = serde_json::from_str(&json).expect("a serialised spec parses");
    assert_eq!(serde_json::to_string(&back).expect("a spec serialises"), json);
}

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<PeerSpec>(data) {
        Ok(spec) => check(&spec),
        Err(_) => {
            if let Ok(spec) = PeerSpec::arbitrary_take_rest(Unstructured::new(data)) {
                check(&spec);
            }
        }
    }
});
