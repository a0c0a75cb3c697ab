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

#[test]
fn int_edge_all_lists_every_variant_once_in_order() {
    // An exhaustive match: a new variant does not compile here until it has a place in `ALL`.
    let index = |e: IntEdge| match e {
        IntEdge::LongMin => 0,
        IntEdge::LongMinMinusOne => 1,
        IntEdge::LongMinPlusOne => 2,
        IntEdge::LongMax => 3,
        IntEdge::LongMaxMinusOne => 4,
        IntEdge::LongMaxPlusOne => 5,
        IntEdge::U64Max => 6,
        IntEdge::U64MaxPlusOne => 7,
        IntEdge::Pow2To200 => 8,
        IntEdge::NegPow2To200 => 9,
        IntEdge::IntMax => 10,
        IntEdge::IntMaxPlusOne => 11,
        IntEdge::UIntMax => 12,
        IntEdge::UIntMaxPlusOne => 13,
        IntEdge::SizeWrapsTimes16 => 14,
        IntEdge::SizeWrapsTimes8 => 15,
        IntEdge::SizeWrapsTimes4 => 16,
    };
    for (i, edge) in IntEdge::ALL.into_iter().enumerate() {
        assert_eq!(index(edge), i, "{edge:?}");
    }
}
