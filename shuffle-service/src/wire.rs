//! The shuffle wire format: how a [`StreamEvent`] crosses a process boundary.
//!
//! A frame is `[kind: u8][crc32 of payload: u32 LE][payload]`; the transport adds its own
//! length prefix. A frame whose checksum does not match is refused before it is parsed. Data frames
//! carry the batch as an Arrow IPC stream (schema + one batch), with the row kinds as an extra
//! trailing `Int8` column when the batch is a changelog. Control events travel as frames of
//! their own, in order with the data. Decoding never panics: a truncated, corrupt or unknown
//! frame is a [`WireError`] that says what was wrong. The Arrow IPC reader trusts the lengths a
//! stream declares, so they are checked against the frame first ([`check_ipc_lengths`]); it can
//! still panic on a malformed schema, so it runs behind `catch_unwind`.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, Int8Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use thiserror::Error;
use weir_dataflow::event::{ChangeBatch, StreamEvent};
use weir_dataflow::ids::CheckpointId;

/// Bumped whenever the frame layout or a message of the connection protocol changes; peers with
/// different versions refuse each other. (3: a refusal carries the error table's code string;
/// 4: hello carries the namespace's token.)
pub const PROTOCOL_VERSION: u16 = 4;

const DATA: u8 = 1;
const CHANGELOG: u8 = 2;
const WATERMARK: u8 = 3;
const IDLE: u8 = 4;
const BARRIER: u8 = 5;
/// The kind byte of an end-of-partition frame: the server watches for it to retire a channel.
pub(crate) const END_OF_PARTITION: u8 = 6;

/// The name of the extra column that carries row kinds across the wire.
const KINDS_COLUMN: &str = "__weir_row_kind";

#[derive(Debug, Error)]
pub enum WireError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated {what} frame: {len} bytes")]
    Truncated { what: &'static str, len: usize },
    #[error("malformed Arrow IPC payload: {0}")]
    Ipc(#[from] arrow::error::ArrowError),
    #[error("a data frame must hold exactly one batch, found {0}")]
    BatchCount(usize),
    #[error("frame checksum mismatch: the frame was corrupted in transit")]
    Checksum,
}

/// Appends the frame of `event` to `out`.
pub fn encode(event: &StreamEvent, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    // The kind and the checksum are filled in once the payload is written.
    out.extend_from_slice(&[0; 5]);
    let kind = encode_payload(event, out)?;
    let crc = crc32fast::hash(&out[start + 5..]);
    out[start] = kind;
    out[start + 1..start + 5].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends the payload of `event`; returns its frame kind.
fn encode_payload(event: &StreamEvent, out: &mut Vec<u8>) -> Result<u8, WireError> {
    Ok(match event {
        StreamEvent::Data(batch) => {
            let (kind, data) = match &batch.kinds {
                None => (DATA, batch.data.clone()),
                Some(kinds) => {
                    let mut fields: Vec<Arc<Field>> = batch.data.schema().fields().iter().cloned().collect();
                    fields.push(Arc::new(Field::new(KINDS_COLUMN, DataType::Int8, false)));
                    let mut columns = batch.data.columns().to_vec();
                    columns.push(kinds.clone() as Arc<dyn Array>);
                    (CHANGELOG, RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
                }
            };
            let mut writer = StreamWriter::try_new(&mut *out, &data.schema())?;
            writer.write(&data)?;
            writer.finish()?;
            kind
        }
        StreamEvent::Watermark(w) => {
            out.extend_from_slice(&w.to_le_bytes());
            WATERMARK
        }
        StreamEvent::Idle => IDLE,
        StreamEvent::Barrier(id) => {
            out.extend_from_slice(&id.0.to_le_bytes());
            BARRIER
        }
        StreamEvent::EndOfPartition => END_OF_PARTITION,
    })
}

/// Decodes one frame.
pub fn decode(frame: &[u8]) -> Result<StreamEvent, WireError> {
    let (&kind, rest) = frame.split_first().ok_or(WireError::Empty)?;
    if rest.len() < 4 {
        return Err(WireError::Truncated { what: "frame", len: frame.len() });
    }
    let (crc, payload) = rest.split_at(4);
    if crc32fast::hash(payload).to_le_bytes() != crc {
        return Err(WireError::Checksum);
    }
    let parse = std::panic::AssertUnwindSafe(|| decode_payload(kind, payload, frame.len()));
    std::panic::catch_unwind(parse).unwrap_or(Err(WireError::Ipc(arrow::error::ArrowError::IpcError(
        "the Arrow IPC reader rejected the payload".into(),
    ))))
}

fn decode_payload(kind: u8, payload: &[u8], frame_len: usize) -> Result<StreamEvent, WireError> {
    let eight = |what: &'static str| -> Result<[u8; 8], WireError> {
        payload.try_into().map_err(|_| WireError::Truncated { what, len: frame_len })
    };
    Ok(match kind {
        DATA | CHANGELOG => {
            check_ipc_lengths(payload)?;
            let reader = StreamReader::try_new(Cursor::new(payload), None)?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let [batch] = <[RecordBatch; 1]>::try_from(batches).map_err(|b| WireError::BatchCount(b.len()))?;
            if let Some(field) = batch.schema().fields().iter().find(|f| has_empty_timezone(f.data_type())) {
                return Err(WireError::Ipc(arrow::error::ArrowError::IpcError(format!(
                    "column {:?} has a timestamp type with an empty time zone",
                    field.name()
                ))));
            }
            if kind == DATA {
                StreamEvent::Data(ChangeBatch::inserts(batch))
            } else {
                let last = batch
                    .num_columns()
                    .checked_sub(1)
                    .ok_or(WireError::Truncated { what: "changelog", len: frame_len })?;
                let kinds = batch
                    .column(last)
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .cloned()
                    .ok_or(WireError::Truncated { what: "changelog", len: frame_len })?;
                let mut schema = batch.schema().as_ref().clone();
                schema.fields = schema.fields.iter().take(last).cloned().collect();
                let data = RecordBatch::try_new(Arc::new(schema), batch.columns()[..last].to_vec())?;
                StreamEvent::Data(ChangeBatch { data, kinds: Some(Arc::new(kinds)) })
            }
        }
        WATERMARK => StreamEvent::Watermark(i64::from_le_bytes(eight("watermark")?)),
        IDLE => StreamEvent::Idle,
        BARRIER => StreamEvent::Barrier(CheckpointId(u64::from_le_bytes(eight("barrier")?))),
        END_OF_PARTITION => StreamEvent::EndOfPartition,
        other => return Err(WireError::UnknownKind(other)),
    })
}

/// Whether `data_type` holds a timestamp whose time zone is the empty string. Weir never writes
/// one, and Arrow's IPC writer would write it back as no time zone at all, so a frame carrying
/// one would not survive its own re-encoding (found by the `shuffle_frame` fuzz target).
fn has_empty_timezone(data_type: &DataType) -> bool {
    match data_type {
        DataType::Timestamp(_, Some(zone)) => zone.is_empty(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_empty_timezone(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_empty_timezone(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_empty_timezone(f.data_type())),
        DataType::Dictionary(key, value) => has_empty_timezone(key) || has_empty_timezone(value),
        DataType::RunEndEncoded(ends, values) => {
            has_empty_timezone(ends.data_type()) || has_empty_timezone(values.data_type())
        }
        _ => false,
    }
}

/// Checks that every message of the Arrow IPC stream `payload` lies within it, and that every
/// buffer a batch names lies within its message's body. Arrow's reader trusts both: it
/// allocates the body a message declares before reading it (a frame of a few hundred bytes
/// could ask for terabytes, and a failed allocation aborts the process, which `catch_unwind`
/// cannot stop), and it panics on a buffer outside the body. Found by the `shuffle_frame` and
/// `shuffle_message` fuzz targets.
fn check_ipc_lengths(payload: &[u8]) -> Result<(), WireError> {
    let malformed =
        |what: &str| WireError::Ipc(arrow::error::ArrowError::IpcError(format!("malformed IPC stream: {what}")));
    let mut rest = payload;
    while let Some((word, after)) = rest.split_first_chunk::<4>() {
        // A message is `[0xFFFFFFFF][metadata length: i32][metadata][body]`; streams written
        // before Arrow 0.15 have no continuation marker. A zero length ends the stream.
        let (length, after) = if *word == [0xFF; 4] {
            after.split_first_chunk::<4>().ok_or_else(|| malformed("a message ends after its continuation marker"))?
        } else {
            (word, after)
        };
        let metadata_len =
            usize::try_from(i32::from_le_bytes(*length)).map_err(|_| malformed("a negative metadata length"))?;
        if metadata_len == 0 {
            return Ok(());
        }
        let metadata =
            after.get(..metadata_len).ok_or_else(|| malformed("a message's metadata runs past the frame"))?;
        let after = &after[metadata_len..];
        let message = arrow::ipc::root_as_message(metadata).map_err(|_| malformed("unreadable message metadata"))?;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|len| *len <= after.len())
            .ok_or_else(|| malformed("a message's body runs past the frame"))?;
        let buffers = match message.header_as_record_batch() {
            Some(batch) => batch.buffers(),
            None => message.header_as_dictionary_batch().and_then(|d| d.data()).and_then(|batch| batch.buffers()),
        };
        for buffer in buffers.into_iter().flat_map(|buffers| buffers.iter()) {
            let offset = u64::try_from(buffer.offset()).ok();
            let length = u64::try_from(buffer.length()).ok();
            let end = offset.zip(length).and_then(|(offset, length)| offset.checked_add(length));
            if end.is_none_or(|end| end > body_len as u64) {
                return Err(malformed("a buffer lies outside its message's body"));
            }
        }
        rest = &after[body_len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use weir_dataflow::event::RowKind;

    use super::*;

    fn sample() -> RecordBatch {
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec!["x", "", "ü"])),
            ],
        )
        .unwrap()
    }

    fn round_trip(event: StreamEvent) -> StreamEvent {
        let mut bytes = Vec::new();
        encode(&event, &mut bytes).unwrap();
        decode(&bytes).unwrap()
    }

    #[test]
    fn events_round_trip() {
        let StreamEvent::Data(b) = round_trip(StreamEvent::Data(ChangeBatch::inserts(sample()))) else { panic!() };
        assert_eq!(b.data, sample());
        assert!(b.kinds.is_none());
        let changelog =
            ChangeBatch::with_kinds(sample(), vec![RowKind::Insert, RowKind::UpdateBefore, RowKind::Delete]);
        let StreamEvent::Data(b) = round_trip(StreamEvent::Data(changelog)) else { panic!() };
        assert_eq!(b.data, sample());
        assert_eq!(b.kind(1), RowKind::UpdateBefore);
        assert_eq!(b.kind(2), RowKind::Delete);
        assert!(matches!(round_trip(StreamEvent::Watermark(-42)), StreamEvent::Watermark(-42)));
        assert!(matches!(round_trip(StreamEvent::Barrier(CheckpointId(7))), StreamEvent::Barrier(CheckpointId(7))));
        assert!(matches!(round_trip(StreamEvent::Idle), StreamEvent::Idle));
        assert!(matches!(round_trip(StreamEvent::EndOfPartition), StreamEvent::EndOfPartition));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        let crc = crc32fast::hash(&[]).to_le_bytes();
        assert!(matches!(decode(&[99, crc[0], crc[1], crc[2], crc[3]]), Err(WireError::UnknownKind(99))));
        assert!(matches!(decode(&[WATERMARK, 1, 2]), Err(WireError::Truncated { .. })));
        let short = [1u8, 2];
        let crc = crc32fast::hash(&short).to_le_bytes();
        assert!(matches!(decode(&[WATERMARK, crc[0], crc[1], crc[2], crc[3], 1, 2]), Err(WireError::Truncated { .. })));
        let mut bytes = Vec::new();
        encode(&StreamEvent::Data(ChangeBatch::inserts(sample())), &mut bytes).unwrap();
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "a frame cut at {cut} must not decode");
        }
        // A flipped byte anywhere after the kind is caught by the checksum.
        for i in 1..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0xA5;
            assert!(decode(&corrupt).is_err(), "corruption at byte {i} went unnoticed");
        }
        // A well-checksummed but malformed payload is an error too, not a panic.
        let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut frame = vec![DATA];
        frame.extend_from_slice(&crc32fast::hash(&garbage).to_le_bytes());
        frame.extend_from_slice(&garbage);
        assert!(decode(&frame).is_err());
    }

    /// Inputs the fuzz targets found: a batch message declaring a body far larger than the frame
    /// (Arrow's reader allocated it: an abort, not an error), and a batch naming a buffer
    /// outside its body (a panic in Arrow's reader). Both are errors before the reader runs.
    #[test]
    fn declared_lengths_beyond_the_frame_are_errors() {
        for (name, frame) in [
            ("ipc-body-length-beyond-frame", &include_bytes!("../testdata/ipc-body-length-beyond-frame.bin")[..]),
            ("ipc-buffer-outside-body", &include_bytes!("../testdata/ipc-buffer-outside-body.bin")[..]),
        ] {
            let payload = &frame[5..];
            assert!(check_ipc_lengths(payload).is_err(), "{name}: lengths not refused");
            assert!(matches!(decode(frame), Err(WireError::Ipc(_))), "{name}: decoded");
        }
        // A schema Arrow's conversion panics on (a missing field list) passes the length checks:
        // the reader's panic is contained and becomes an error.
        let frame = include_bytes!("../testdata/ipc-schema-arrow-panics-on.bin");
        check_ipc_lengths(&frame[5..]).unwrap();
        assert!(matches!(decode(frame), Err(WireError::Ipc(_))));
        // A changelog frame with a timestamp column whose time zone is empty: Arrow's writer
        // would drop the zone, so the frame is refused rather than decoded into a batch that
        // does not survive re-encoding.
        let frame = include_bytes!("../testdata/ipc-empty-timezone.bin");
        let Err(WireError::Ipc(error)) = decode(frame) else { panic!("a frame with an empty time zone decoded") };
        assert!(error.to_string().contains("empty time zone"), "{error}");
        // Every frame Weir writes passes the check.
        let changelog =
            ChangeBatch::with_kinds(sample(), vec![RowKind::Insert, RowKind::UpdateBefore, RowKind::Delete]);
        for event in [StreamEvent::Data(ChangeBatch::inserts(sample())), StreamEvent::Data(changelog)] {
            let mut bytes = Vec::new();
            encode(&event, &mut bytes).unwrap();
            check_ipc_lengths(&bytes[5..]).unwrap();
        }
    }
}
