//! The xs_wire message format: a 16-byte little-endian [`XsdSockmsg`] header followed by `len`
//! payload bytes, and the payload conventions of `docs/misc/xenstore.txt` (NUL-terminated
//! strings, `OK` acknowledgements, error names, `path\0token\0` watch events).

use alloc::vec::Vec;

use hypercall_abi::io::xs_wire::{XsType, XsdSockmsg, XENSTORE_PAYLOAD_MAX};

use super::XsError;

/// Size of the message header.
pub const HEADER_LEN: usize = core::mem::size_of::<XsdSockmsg>();

/// Reads a header from the first [`HEADER_LEN`] bytes of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Option<XsdSockmsg> {
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some(XsdSockmsg {
        type_: word(0)?,
        req_id: word(1)?,
        tx_id: word(2)?,
        len: word(3)?,
    })
}

/// A whole message: header then payload. The header's `len` is the payload's length.
pub fn encode(type_: XsType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    for word in [type_.raw(), req_id, tx_id, len] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// An `XS_ERROR` reply carrying `error`'s name.
pub fn error_reply(req_id: u32, tx_id: u32, error: XsError) -> Vec<u8> {
    let mut payload = Vec::from(error.name().as_bytes());
    payload.push(0);
    encode(XsType::Error, req_id, tx_id, &payload)
}

/// An `XS_WATCH_EVENT` message (`req_id` and `tx_id` 0), or `None` if it would not fit.
pub fn watch_event(path: &[u8], token: &[u8]) -> Option<Vec<u8>> {
    let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
    payload.extend_from_slice(path);
    payload.push(0);
    payload.extend_from_slice(token);
    payload.push(0);
    (payload.len() <= XENSTORE_PAYLOAD_MAX).then(|| encode(XsType::WatchEvent, 0, 0, &payload))
}

/// The payload of a plain acknowledgement.
pub const OK: &[u8] = b"OK\0";

/// The NUL-terminated strings of a payload (`<a>|<b>|...`). The payload must end with a NUL.
pub fn strings(payload: &[u8]) -> Result<Vec<&[u8]>, XsError> {
    let body = payload.strip_suffix(&[0]).ok_or(XsError::Invalid)?;
    Ok(body.split(|&b| b == 0).collect())
}

/// The single NUL-terminated string of a payload (`<path>|`).
pub fn one_string(payload: &[u8]) -> Result<&[u8], XsError> {
    match strings(payload)?.as_slice() {
        [one] => Ok(one),
        _ => Err(XsError::Invalid),
    }
}

/// The first NUL-terminated string and the raw bytes after it (`<path>|<value|>`).
pub fn string_and_rest(payload: &[u8]) -> Result<(&[u8], &[u8]), XsError> {
    let nul = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or(XsError::Invalid)?;
    Ok((&payload[..nul], &payload[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let msg = encode(XsType::Read, 7, 9, b"/a\0");
        assert_eq!(msg.len(), HEADER_LEN + 3);
        let h = parse_header(&msg).unwrap();
        assert_eq!((h.type_, h.req_id, h.tx_id, h.len), (2, 7, 9, 3));
        assert_eq!(parse_header(&msg[..15]), None);
    }

    #[test]
    fn error_and_event_payloads() {
        let e = error_reply(1, 2, XsError::NoEntry);
        assert_eq!(&e[HEADER_LEN..], b"ENOENT\0");
        assert_eq!(parse_header(&e).unwrap().type_, XsType::Error.raw());
        let w = watch_event(b"/a", b"tok").unwrap();
        assert_eq!(&w[HEADER_LEN..], b"/a\0tok\0");
        assert!(watch_event(&[b'a'; 4000], &[b't'; 95]).is_none());
    }

    #[test]
    fn payload_splitting() {
        assert_eq!(strings(b"a\0b\0").unwrap(), [&b"a"[..], b"b"]);
        assert_eq!(strings(b"a\0b"), Err(XsError::Invalid));
        assert_eq!(strings(b""), Err(XsError::Invalid));
        assert_eq!(one_string(b"a\0"), Ok(&b"a"[..]));
        assert_eq!(one_string(b"a\0b\0"), Err(XsError::Invalid));
        assert_eq!(string_and_rest(b"p\0v\0x"), Ok((&b"p"[..], &b"v\0x"[..])));
        assert_eq!(string_and_rest(b"p"), Err(XsError::Invalid));
    }
}
