use super::*;
use std::io::Write;

fn file_with(header: &str, data: &[u8]) -> (tempfile::NamedTempFile, u64) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(data).unwrap();
    let len = 8 + header.len() as u64 + data.len() as u64;
    (f, len)
}

fn parse(header: &str, data: &[u8]) -> Result<Layout, ParseError> {
    let (f, len) = file_with(header, data);
    read_layout(f.as_file(), len)
}

fn format_offset(r: Result<Layout, ParseError>) -> u64 {
    match r {
        Err(ParseError::Format(e)) => e.offset,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn orders_by_offset_and_keeps_gaps_and_trailing_bytes() {
    let h = r#"{"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}, "a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"__metadata__":{"format":"pt"}}  "#;
    let layout = parse(h, &[1, 2, 9, 3, 4, 7]).unwrap();
    let names: Vec<_> = layout.tensors().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let start = 8 + h.len() as u64;
    assert_eq!(layout.spans[1], Span::Bytes { start: start + 2, end: start + 3 });
    assert_eq!(layout.spans[3], Span::Bytes { start: start + 5, end: start + 6 });
}

#[test]
fn empty_tensors_and_scalars_are_fine() {
    let h = r#"{"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}"#;
    let layout = parse(h, &[0; 8]).unwrap();
    assert_eq!(layout.tensors().count(), 2);
}

#[test]
fn truncated_file_is_an_error_at_zero() {
    let (f, _) = file_with("{}", &[]);
    assert_eq!(format_offset(read_layout(f.as_file(), 5)), 0);
}

#[test]
fn header_length_past_end_is_an_error() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&1000u64.to_le_bytes()).unwrap();
    f.write_all(b"{}").unwrap();
    assert_eq!(format_offset(read_layout(f.as_file(), 10)), 0);
}

#[test]
fn overlapping_offsets_are_an_error() {
    let h =
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
    let start = 8 + h.len() as u64;
    assert_eq!(format_offset(parse(h, &[0; 4])), start + 2);
}

#[test]
fn shape_overflow_is_an_error() {
    let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#;
    assert!(format_offset(parse(h, &[0; 4])) >= 8);
}

#[test]
fn non_utf8_header_names_the_bad_byte() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&4u64.to_le_bytes()).unwrap();
    f.write_all(b"{\"\xff}").unwrap();
    assert_eq!(format_offset(read_layout(f.as_file(), 12)), 10);
}

#[test]
fn malformed_json_points_into_the_header() {
    let h = "{\"a\": [1, }";
    assert_eq!(format_offset(parse(h, &[])), 8 + 10);
}

#[test]
fn size_mismatch_and_unknown_dtype_are_errors() {
    assert!(parse(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]).is_err());
    assert!(parse(r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#, &[0; 16]).is_err());
    assert!(parse(r#"[1,2]"#, &[]).is_err());
}

#[test]
fn agrees_with_the_safetensors_crate_on_its_own_output() {
    use ::safetensors::tensor::{Dtype, TensorView};
    let a = vec![1u8; 12];
    let b = vec![2u8; 3];
    let views = vec![
        ("w".to_string(), TensorView::new(Dtype::F32, vec![3], &a).unwrap()),
        ("m".to_string(), TensorView::new(Dtype::U8, vec![3], &b).unwrap()),
    ];
    let bytes = ::safetensors::serialize(views, None).unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&bytes).unwrap();
    let layout = read_layout(f.as_file(), bytes.len() as u64).unwrap();
    let total: u64 = layout.tensors().map(TensorSpan::len).sum();
    assert_eq!(total, 15);
    assert!(layout.spans.iter().all(|s| matches!(s, Span::Tensor(_))));
}

#[test]
fn null_metadata_and_unknown_tensor_keys_are_accepted_like_safetensors_does() {
    let h = r#"{"__metadata__":null,"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":[1]}}"#;
    assert_eq!(parse(h, &[1, 2]).unwrap().tensors().count(), 1);
    let h = r#"{"__metadata__":{"epoch":3},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    assert_eq!(format_offset(parse(h, &[1, 2])), 8);
}

#[test]
fn a_duplicate_tensor_name_is_an_error_naming_it() {
    let header =
        br#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
    let err = parse_header(header, 8 + header.len() as u64 + 4).unwrap_err();
    assert!(err.to_string().contains("\"w\" appears twice"), "{err}");
}
