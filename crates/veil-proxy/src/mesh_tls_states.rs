//! How [`MeshTls`] handles rustls' connection states and feeds it the
//! bytes received: the part of `mesh_tls` that knows the unbuffered API's
//! rules (every `ConnectionState` handled; the bytes rustls did not discard
//! handed back, in order, on its next call).

use super::{MeshTls, Side, MAX_STEPS, READ_SIZE, RECV, UNEXPECTED_EOF};
use crate::mesh_frames::Streams;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a call wants of the connection's states.
pub(super) enum Want<'a, 'b> {
    /// The handshake's end.
    Handshake,
    /// Plaintext, into this buffer.
    Read(&'a mut ReadBuf<'b>),
    /// This plaintext encrypted into this buffer.
    Write(&'a [u8], &'a mut Vec<u8>),
    /// Our `close_notify` queued.
    Close,
}

/// Where handling states stopped.
pub(super) enum Stop {
    /// rustls needs more bytes from the peer.
    NeedData,
    /// What was wanted is done; for a write, the bytes of records made.
    Done(usize),
    /// [`MAX_STEPS`] states were handled: the call yields.
    Yield,
}

pub(super) fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Side> MeshTls<IO, C> {
    /// Handles states over `input` (received bytes) until `want` is met or
    /// rustls needs more; returns the bytes of `input` consumed.
    fn step(&mut self, input: &mut [u8], want: &mut Want<'_, '_>) -> (usize, io::Result<Stop>) {
        let mut used = 0;
        let mut delivered = false;
        for _ in 0..MAX_STEPS {
            let rest = input.get_mut(used..).unwrap_or_default();
            let UnbufferedStatus { discard, state } = self.conn.process(rest);
            let stop = match state {
                Err(e) => {
                    self.failed = Some(e.clone());
                    Some(Err(invalid_data(e)))
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    // A new message (a KeyUpdate answer, an alert) does not wait.
                    self.deferred = false;
                    let at = self.outgoing.len();
                    let need = match data.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
                        _ => 0,
                    };
                    self.outgoing.resize(at + need, 0);
                    match data.encode(self.outgoing.get_mut(at..).unwrap_or_default()) {
                        Ok(n) => {
                            self.outgoing.truncate(at + n);
                            None
                        }
                        Err(e) => {
                            self.outgoing.truncate(at);
                            Some(Err(io::Error::other(e)))
                        }
                    }
                }
                // The records are ours now, in `outgoing`, ahead of anything later.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::ReadTraffic(mut data)) => {
                    let mut stop = None;
                    while let Some(record) = data.next_record() {
                        match record {
                            Ok(record) => {
                                used += record.discard;
                                match &mut self.streams {
                                    None => delivered |= deliver(record.payload, want, &mut self.plain),
                                    Some(streams) => match deliver_stream(record.payload, want, &mut self.plain, streams) {
                                        Ok(now) => delivered |= now,
                                        Err(e) => {
                                            stop = Some(Err(e));
                                            break;
                                        }
                                    },
                                }
                            }
                            Err(e) => {
                                stop = Some(Err(invalid_data(e)));
                                break;
                            }
                        }
                    }
                    match want {
                        Want::Read(out) if out.remaining() == 0 => stop.or(Some(Ok(Stop::Done(0)))),
                        _ => stop,
                    }
                }
                // A client may send its Finished, data and close_notify at once.
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    match want {
                        Want::Handshake if self.conn.is_handshaking() => Some(Err(handshake_eof())),
                        Want::Handshake | Want::Read(_) => Some(Ok(Stop::Done(0))),
                        Want::Write(..) | Want::Close => None,
                    }
                }
                Ok(ConnectionState::Closed) => {
                    (self.peer_closed, self.closed) = (true, true);
                    match want {
                        Want::Handshake if self.conn.is_handshaking() => Some(Err(handshake_eof())),
                        Want::Handshake => Some(Ok(Stop::Done(0))),
                        Want::Write(..) => Some(Err(io::Error::new(io::ErrorKind::BrokenPipe, "mesh TLS stream closed"))),
                        Want::Read(_) | Want::Close => Some(Ok(Stop::Done(0))),
                    }
                }
                Ok(ConnectionState::BlockedHandshake) => match want {
                    Want::Handshake | Want::Read(_) => Some(Ok(Stop::NeedData)),
                    Want::Write(..) | Want::Close => Some(Err(io::Error::new(io::ErrorKind::NotConnected, "mesh TLS handshake not complete"))),
                },
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match want {
                    Want::Handshake => Some(Ok(if self.conn.is_handshaking() { Stop::NeedData } else { Stop::Done(0) })),
                    Want::Read(_) => Some(Ok(Stop::NeedData)),
                    Want::Write(data, records) => Some(encrypt(|out| traffic.encrypt(data, out), records).map(Stop::Done)),
                    Want::Close => {
                        self.closed = true;
                        let mut records = Vec::new();
                        let queued = encrypt(|out| traffic.queue_close_notify(out), &mut records);
                        Some(queued.map(|n| {
                            self.outgoing.extend_from_slice(records.get(..n).unwrap_or_default());
                            Stop::Done(0)
                        }))
                    }
                },
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    Some(Err(io::Error::new(io::ErrorKind::InvalidData, "0-RTT data is not accepted on mesh connections")))
                }
                Ok(other) => Some(Err(io::Error::other(format!("unexpected TLS connection state {other:?}")))),
            };
            used += discard;
            match stop {
                None => {}
                Some(Ok(Stop::NeedData)) if delivered => return (used, Ok(Stop::Done(0))),
                Some(stop) => return (used, stop),
            }
        }
        // Bytes already delivered are returned now; otherwise the call yields.
        (used, Ok(if delivered { Stop::Done(0) } else { Stop::Yield }))
    }

    /// Handles states over the bytes held and those the socket has, reading
    /// it while rustls needs more, until `want` is met.
    pub(super) fn poll_input(&mut self, cx: &mut Context<'_>, want: &mut Want<'_, '_>) -> Poll<io::Result<()>> {
        let polled = RECV.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.poll_input_with(cx, want, &mut scratch),
            // Not reachable (polls do not nest); stay correct regardless.
            Err(_) => self.poll_input_with(cx, want, &mut Vec::new()),
        });
        if self.failed.is_some() {
            self.send_alert(cx);
        }
        polled
    }

    fn poll_input_with(&mut self, cx: &mut Context<'_>, want: &mut Want<'_, '_>, scratch: &mut Vec<u8>) -> Poll<io::Result<()>> {
        let held = std::mem::take(&mut self.incoming);
        let (mut start, mut end) = (0, held.len());
        if scratch.len() < end + READ_SIZE {
            scratch.resize(end + READ_SIZE, 0);
        }
        if let Some(space) = scratch.get_mut(..end) {
            space.copy_from_slice(&held);
        }
        drop(held);
        let mut read = false;
        let polled = 'input: {
            for _ in 0..MAX_STEPS {
                if read {
                    if self.eof {
                        break 'input Poll::Ready(Err(self.eof_error(want)));
                    }
                    // What the peer waits for goes out before we wait for it.
                    if let Err(e) = self.try_send(cx) {
                        break 'input Poll::Ready(Err(e));
                    }
                    scratch.copy_within(start..end, 0);
                    (start, end) = (0, end - start);
                    if scratch.len() < end + READ_SIZE {
                        scratch.resize(end + READ_SIZE, 0);
                    }
                    let mut buf = ReadBuf::new(scratch.get_mut(end..end + READ_SIZE).unwrap_or_default());
                    match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                        Poll::Pending => break 'input Poll::Pending,
                        Poll::Ready(Err(e)) => break 'input Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = buf.filled().len();
                    if n == 0 {
                        self.eof = true;
                        break 'input Poll::Ready(Err(self.eof_error(want)));
                    }
                    end += n;
                }
                let (used, stop) = self.step(scratch.get_mut(start..end).unwrap_or_default(), want);
                start += used;
                match stop {
                    Ok(Stop::NeedData) => read = true,
                    Ok(Stop::Done(_)) => break 'input Poll::Ready(Ok(())),
                    Ok(Stop::Yield) => break 'input yield_now(cx),
                    Err(e) => break 'input Poll::Ready(Err(e)),
                }
            }
            // MAX_STEPS reads brought nothing to return yet.
            yield_now(cx)
        };
        if start < end {
            self.incoming = scratch.get(start..end).unwrap_or_default().to_vec();
        }
        polled
    }

    /// The error for the socket's end while `want` waited for the peer.
    fn eof_error(&self, want: &Want<'_, '_>) -> io::Error {
        match want {
            Want::Handshake => handshake_eof(),
            _ => io::Error::new(io::ErrorKind::UnexpectedEof, UNEXPECTED_EOF),
        }
    }

    /// Queues the alert rustls made for its error, and tries once to send it.
    /// rustls hands out a queued record before it reads again, so one call
    /// gets the alert; a second would deframe the bad bytes again, before it
    /// looks at what waits to be sent, and make a second fatal alert (a debug
    /// assertion in rustls, a duplicate alert otherwise). The record is sent
    /// as it is: nothing follows it on this connection.
    fn send_alert(&mut self, cx: &mut Context<'_>) {
        // rustls may still point into the bytes held: it gets them back.
        let mut held = std::mem::take(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = self.conn.process(&mut held).state {
            let mut record = [0u8; 64];
            if let Ok(n) = data.encode(&mut record) {
                self.outgoing.extend_from_slice(record.get(..n).unwrap_or_default());
            }
        }
        self.incoming = held;
        let _ = self.try_send(cx);
    }

    /// Handles states over the bytes held (none, unless a partial record
    /// or records the reader has not asked for yet) until `want` is met.
    /// Never the empty slice in their place: rustls may point into them
    /// (a handshake message not complete yet). Plaintext found in them
    /// waits in `plain`, so that received records never block a write.
    pub(super) fn step_held(&mut self, want: &mut Want<'_, '_>) -> io::Result<Stop> {
        let mut held = std::mem::take(&mut self.incoming);
        let (used, stop) = self.step(&mut held, want);
        if used < held.len() {
            held.drain(..used);
            self.incoming = held;
        }
        stop
    }
}

/// Calls `seal` with `records` grown to what it asks for; the bytes it wrote.
fn encrypt(mut seal: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>, records: &mut Vec<u8>) -> io::Result<usize> {
    for _ in 0..2 {
        match seal(records) {
            Ok(n) => return Ok(n),
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => records.resize(required_size, 0),
            Err(e) => return Err(io::Error::other(e)),
        }
    }
    Err(io::Error::other("mesh TLS: record buffer too small"))
}

/// Puts `payload` into the caller's buffer of a read, the rest after what
/// `plain` holds; true when the caller got bytes.
fn deliver(payload: &[u8], want: &mut Want<'_, '_>, plain: &mut Vec<u8>) -> bool {
    let n = match want {
        Want::Read(out) => {
            let n = out.remaining().min(payload.len());
            out.put_slice(payload.get(..n).unwrap_or_default());
            n
        }
        _ => 0,
    };
    plain.extend_from_slice(payload.get(n..).unwrap_or_default());
    n > 0
}

/// [`deliver`] for a connection that carries streams: the `DATA` of
/// `payload` goes into the caller's buffer (the frame headers are read on
/// the way, `mesh_frames`), what does not fit or follows a stream's `END`
/// waits in `plain` as received. True when the caller got bytes or met a
/// control frame.
fn deliver_stream(payload: &[u8], want: &mut Want<'_, '_>, plain: &mut Vec<u8>, streams: &mut Streams) -> io::Result<bool> {
    match want {
        Want::Read(out) if plain.is_empty() && !streams.paused() => {
            let before = out.filled().len();
            let (used, event) = streams.read(payload, out)?;
            plain.extend_from_slice(payload.get(used..).unwrap_or_default());
            Ok(event.is_some() || out.filled().len() > before)
        }
        _ => {
            plain.extend_from_slice(payload);
            Ok(false)
        }
    }
}

fn handshake_eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof")
}

/// `Pending`, with the task woken to go on where it stopped.
fn yield_now<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}
