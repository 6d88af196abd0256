//! The framing read byte by byte and in one piece, and the frames each
//! side refuses.

use super::*;

fn frames(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn data(payload: &[u8]) -> Vec<u8> {
    frames(&[&data_header(payload.len()), payload])
}

/// Reads `raw` in pieces of `step` bytes into a buffer of `room` bytes at a
/// time; returns the data and the events, in order.
fn read_all(streams: &mut Streams, raw: &[u8], step: usize, room: usize) -> io::Result<(Vec<u8>, Vec<Event>)> {
    let (mut got, mut events, mut at) = (Vec::new(), Vec::new(), 0);
    let mut pending: Vec<u8> = Vec::new();
    while at < raw.len() || !pending.is_empty() {
        if let Some(piece) = raw.get(at..(at + step).min(raw.len())).filter(|p| !p.is_empty()) {
            pending.extend_from_slice(piece);
            at += piece.len();
        }
        let mut buf = vec![0u8; room];
        let mut out = ReadBuf::new(&mut buf);
        let (used, event) = streams.read(&pending, &mut out)?;
        got.extend_from_slice(out.filled());
        pending.drain(..used);
        events.extend(event);
        if used == 0 && event.is_none() && at >= raw.len() {
            break;
        }
    }
    Ok((got, events))
}

#[test]
fn a_stream_reads_the_same_whole_or_byte_by_byte() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let raw = frames(&[&OPEN_FRAME, &data(&payload[..3]), &data(&payload[3..]), &END_FRAME]);
    for (step, room) in [(raw.len(), 1 << 20), (1, 7), (5, 4096), (16_384, 1)] {
        let mut server = Streams::new(Role::Server);
        let (got, events) = read_all(&mut server, &raw, step, room).unwrap();
        assert_eq!(events, [Event::Open, Event::End], "step {step}, room {room}");
        assert!(got == payload, "step {step}, room {room}: {} bytes", got.len());
        server.we_ended = true;
        assert!(server.finished() && server.paused());
    }
}

#[test]
fn the_reader_stops_after_end_and_the_next_stream_reads_on() {
    let mut client = Streams::new(Role::Client);
    client.next();
    assert!(client.open_pending && client.opened);
    let raw = frames(&[&data(b"one"), &END_FRAME, &data(b"two")]);
    let mut buf = [0u8; 64];
    let mut out = ReadBuf::new(&mut buf);
    let (used, event) = client.read(&raw, &mut out).unwrap();
    assert_eq!((out.filled(), event), (&b"one"[..], Some(Event::End)));
    assert!(client.paused(), "what follows END waits for the next stream");
    assert!(!client.finished(), "our END is not sent yet");
    client.we_ended = true;
    assert!(client.finished());
    client.next();
    let mut out = ReadBuf::new(&mut buf);
    let (rest, event) = client.read(&raw[used..], &mut out).unwrap();
    assert_eq!((rest, out.filled(), event), (raw.len() - used, &b"two"[..], None));
}

#[test]
fn frames_a_side_must_not_get_are_refused() {
    let cases: [(Role, Vec<u8>, &str); 6] = [
        (Role::Server, data(b"x"), "DATA before OPEN"),
        (Role::Client, OPEN_FRAME.to_vec(), "OPEN from the server"),
        (Role::Server, frames(&[&OPEN_FRAME, &OPEN_FRAME]), "a second OPEN"),
        (Role::Server, frames(&[&OPEN_FRAME, &[9, 0, 0, 0]]), "an unknown type"),
        (Role::Server, frames(&[&OPEN_FRAME, &[END, 0, 0, 1]]), "END with a length"),
        (Role::Server, frames(&[&OPEN_FRAME, &data_header(0)]), "empty DATA"),
    ];
    for (role, raw, what) in cases {
        let mut streams = Streams::new(role);
        if role == Role::Client {
            streams.next();
        }
        let err = read_all(&mut streams, &raw, raw.len(), 64).expect_err(what);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        assert!(err.to_string().contains("veil-streams/1"), "{what}: {err}");
    }
    // Control: the same frames in a valid order are read.
    let mut server = Streams::new(Role::Server);
    let ok = frames(&[&OPEN_FRAME, &data(b"x"), &END_FRAME]);
    assert_eq!(read_all(&mut server, &ok, ok.len(), 64).unwrap(), (b"x".to_vec(), vec![Event::Open, Event::End]));
}

#[test]
fn a_data_header_carries_its_length() {
    assert_eq!(data_header(1), [DATA, 0, 0, 1]);
    assert_eq!(data_header(0x01_02_03), [DATA, 1, 2, 3]);
    assert_eq!(data_header(usize::MAX), [DATA, 0xff, 0xff, 0xff], "clamped to MAX_DATA");
}
