use arbitrary::Unstructured;

use super::*;

#[test]
fn str_literal_escapes_everything_unusual() {
    assert_eq!(str_literal(&[0x61, 0x27, 0x5C]), r"'a\'\\'");
    assert_eq!(
        str_literal(&[0, 0xD800, 0x1F600]),
        r"'\x00\ud800\U0001f600'"
    );
}

#[test]
fn bytes_literal_is_ascii() {
    assert_eq!(bytes_literal(b"a'\\\x00\xff"), r"b'a\'\\\x00\xff'");
}

#[test]
fn generation_respects_limits() {
    let limits = Limits::default();
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut u = Unstructured::new(&data);
    for _ in 0..200 {
        let value = PyValue::arbitrary_with(&mut u, &limits).unwrap();
        let mut nodes = 0;
        value.walk(&mut |_| nodes += 1);
        // Dict keys are generated outside the node budget; allow for them.
        assert!(
            nodes <= 2 * limits.max_nodes as usize,
            "{nodes} nodes in {value:?}"
        );
    }
}
