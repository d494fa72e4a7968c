//! The archive file format: Parquet, zstd, one row per event with the stored columns
//! ([`super::COLUMNS`]), in feed order, row groups of [`ROW_GROUP`] events. Written and read
//! with the `parquet` crate's column and row APIs (no Arrow).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;

use super::{ArchiveError, StoredRow};

/// Events per row group.
const ROW_GROUP: usize = 10_000;

/// The file's schema; the columns in [`super::COLUMNS`]' order.
const SCHEMA: &str = "
message factum_event {
    REQUIRED BYTE_ARRAY stream_id (UTF8);
    REQUIRED INT64 stream_version;
    REQUIRED INT64 position;
    REQUIRED INT64 tx;
    REQUIRED BYTE_ARRAY aggregate_type (UTF8);
    REQUIRED BYTE_ARRAY event_id (UTF8);
    REQUIRED BYTE_ARRAY event_type (UTF8);
    REQUIRED INT32 schema_version;
    REQUIRED BYTE_ARRAY payload (UTF8);
    REQUIRED BYTE_ARRAY metadata (UTF8);
    REQUIRED BYTE_ARRAY correlation_id (UTF8);
    REQUIRED BYTE_ARRAY causation_id (UTF8);
    OPTIONAL BYTE_ARRAY actor (UTF8);
    REQUIRED INT64 recorded_at (TIMESTAMP(MICROS, true));
    REQUIRED BYTE_ARRAY tenant (UTF8);
}
";

type Boxed = Box<dyn std::error::Error + Send + Sync>;

/// Writes `rows` to a new file at `path` (refusing an existing one) and flushes it to disk
/// with its directory entry. Returns the file's size.
///
/// # Errors
/// [`ArchiveError::Write`]; a partly written file is removed.
pub(crate) fn write_file(path: &Path, rows: &[StoredRow]) -> Result<u64, ArchiveError> {
    let fail = |source| ArchiveError::Write {
        file: path.to_owned(),
        source,
    };
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| fail(error.into()))?;
    write(file, path, rows).map_err(|source| {
        // Nothing refers to the file yet: it was created above.
        let _ = std::fs::remove_file(path);
        fail(source)
    })
}

fn write(file: File, path: &Path, rows: &[StoredRow]) -> Result<u64, Boxed> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .set_created_by(format!("factum {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut writer = SerializedFileWriter::new(file, schema, properties)?;
    for group in rows.chunks(ROW_GROUP) {
        let mut row_group = writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut writer) = row_group.next_column()? {
            match column {
                1 | 2 | 3 | 13 => {
                    let values: Vec<i64> = group
                        .iter()
                        .map(|row| match column {
                            1 => row.stream_version,
                            2 => row.position,
                            3 => row.tx,
                            _ => row.recorded_at.timestamp_micros(),
                        })
                        .collect();
                    writer
                        .typed::<Int64Type>()
                        .write_batch(&values, None, None)?;
                }
                7 => {
                    let values: Vec<i32> = group.iter().map(|row| row.schema_version).collect();
                    writer
                        .typed::<Int32Type>()
                        .write_batch(&values, None, None)?;
                }
                12 => {
                    let values: Vec<ByteArray> = group
                        .iter()
                        .filter_map(|row| row.actor.as_deref().map(ByteArray::from))
                        .collect();
                    let levels: Vec<i16> = group
                        .iter()
                        .map(|row| i16::from(row.actor.is_some()))
                        .collect();
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&levels), None)?;
                }
                _ => {
                    let values: Vec<ByteArray> = group
                        .iter()
                        .map(|row| {
                            let uuid;
                            let text: &str = match column {
                                0 => &row.stream_id,
                                4 => &row.aggregate_type,
                                5 => {
                                    uuid = row.event_id.to_string();
                                    &uuid
                                }
                                6 => &row.event_type,
                                8 => &row.payload,
                                9 => &row.metadata,
                                10 => {
                                    uuid = row.correlation_id.to_string();
                                    &uuid
                                }
                                11 => {
                                    uuid = row.causation_id.to_string();
                                    &uuid
                                }
                                _ => &row.tenant,
                            };
                            ByteArray::from(text)
                        })
                        .collect();
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(&values, None, None)?;
                }
            }
            writer.close()?;
            column += 1;
        }
        row_group.close()?;
    }
    let mut file = writer.into_inner()?;
    file.flush()?;
    file.sync_all()?;
    // The file's name is durable with its directory.
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(file.metadata()?.len())
}

/// Reads every event of the file at `path`, in the file's (feed) order.
///
/// # Errors
/// [`ArchiveError::Read`] naming `archive` when the file is missing, unreadable, or holds a
/// row that is not an event.
pub(crate) fn read_file(archive: i64, path: &Path) -> Result<Vec<StoredRow>, ArchiveError> {
    read(path).map_err(|error| ArchiveError::Read {
        archive,
        file: path.to_owned(),
        reason: error.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<StoredRow>, Boxed> {
    let reader = SerializedFileReader::new(File::open(path)?)?;
    let total = reader.metadata().file_metadata().num_rows();
    let mut rows = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, field)| field).collect();
        let [
            stream_id,
            stream_version,
            position,
            tx,
            aggregate_type,
            event_id,
            event_type,
            schema_version,
            payload,
            metadata,
            correlation_id,
            causation_id,
            actor,
            recorded_at,
            tenant,
        ] = fields.as_slice()
        else {
            return Err(format!("a row has {} columns, not 15", fields.len()).into());
        };
        rows.push(StoredRow {
            stream_id: text(stream_id, "stream_id")?,
            stream_version: long(stream_version, "stream_version")?,
            position: long(position, "position")?,
            tx: long(tx, "tx")?,
            aggregate_type: text(aggregate_type, "aggregate_type")?,
            event_id: text(event_id, "event_id")?.parse()?,
            event_type: text(event_type, "event_type")?,
            schema_version: match schema_version {
                Field::Int(value) => *value,
                other => return Err(format!("schema_version is {other}, not an INT32").into()),
            },
            payload: text(payload, "payload")?,
            metadata: text(metadata, "metadata")?,
            correlation_id: text(correlation_id, "correlation_id")?.parse()?,
            causation_id: text(causation_id, "causation_id")?.parse()?,
            actor: match actor {
                Field::Null => None,
                field => Some(text(field, "actor")?),
            },
            recorded_at: match recorded_at {
                Field::TimestampMicros(micros) => {
                    DateTime::<Utc>::from_timestamp_micros(*micros)
                        .ok_or_else(|| format!("recorded_at {micros} is out of range"))?
                }
                other => return Err(format!("recorded_at is {other}, not a timestamp").into()),
            },
            tenant: text(tenant, "tenant")?,
        });
    }
    Ok(rows)
}

fn text(field: &Field, column: &str) -> Result<String, Boxed> {
    match field {
        Field::Str(text) => Ok(text.clone()),
        other => Err(format!("{column} is {other}, not a string").into()),
    }
}

fn long(field: &Field, column: &str) -> Result<i64, Boxed> {
    match field {
        Field::Long(value) => Ok(*value),
        other => Err(format!("{column} is {other}, not an INT64").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: i64, actor: Option<&str>) -> StoredRow {
        StoredRow {
            stream_id: format!("account-{}", n % 3),
            stream_version: n / 3 + 1,
            position: n + 1,
            tx: 1000 + n,
            aggregate_type: "Account".to_owned(),
            event_id: uuid::Uuid::from_u128(n as u128 + 1),
            event_type: "Deposited".to_owned(),
            schema_version: 2,
            payload: format!(r#"{{"amount":{n}}}"#),
            metadata: r#"{"k":"v"}"#.to_owned(),
            correlation_id: uuid::Uuid::from_u128(7),
            causation_id: uuid::Uuid::from_u128(n as u128 + 9),
            actor: actor.map(str::to_owned),
            recorded_at: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456 + n)
                .unwrap_or_default(),
            tenant: if n % 2 == 0 {
                String::new()
            } else {
                "acme".to_owned()
            },
        }
    }

    #[test]
    fn a_file_reads_back_every_column_as_written() {
        let dir = std::env::temp_dir().join(format!("factum-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.parquet");
        // More than a row group, with and without actors.
        let rows: Vec<StoredRow> = (0..ROW_GROUP as i64 + 7)
            .map(|n| row(n, (n % 5 == 0).then_some("ada")))
            .collect();
        let bytes = write_file(&path, &rows).unwrap();
        assert!(bytes > 0);
        assert_eq!(read_file(1, &path).unwrap(), rows);
        // A file is never overwritten.
        assert!(matches!(
            write_file(&path, &rows[..1]),
            Err(ArchiveError::Write { .. })
        ));
        assert_eq!(read_file(1, &path).unwrap().len(), rows.len());
        std::fs::remove_dir_all(&dir).unwrap();
        // A missing file is a typed error naming the archive.
        let missing = read_file(7, &path).unwrap_err();
        assert!(matches!(missing, ArchiveError::Read { archive: 7, .. }));
    }
}
