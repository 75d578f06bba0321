//! Arrow schemas of the cache's Parquet files, and the small encodings they rely on (embedding dtype,
//! jitter order as letters).
//!
//! Image parts (`images/part-*.parquet`), one row per (image, view):
//!
//! | column | type |
//! |---|---|
//! | `path` | utf8, relative to the dataset root, `/` separators |
//! | `domain` | utf8 |
//! | `label` | int32 |
//! | `view` | int16, 0 = the deterministic evaluation view |
//! | `crop` | fixed_size_list<float32>[4]: x, y, w, h normalised to the image |
//! | `flip` | bool |
//! | `brightness`, `contrast`, `saturation`, `hue` | float32 |
//! | `jitter_order` | utf8, 4 letters from `bcsh` in application order, e.g. `bsch` |
//! | `grayscale` | bool |
//! | `embedding` | fixed_size_list<float32 or float16>[dim] |
//!
//! `texts.parquet`, one row per (class, template[, domain]): `label` int32, `class_name` utf8, `template`
//! utf8, `domain` utf8 (nullable), `prompt` utf8, `embedding` fixed_size_list[dim].
//!
//! Only `texts.domain` is nullable. List items are named `item` (Arrow's convention), so the embedding's
//! Parquet leaf column is `embedding.list.item`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::views::JitterOp;

pub const COL_PATH: &str = "path";
pub const COL_DOMAIN: &str = "domain";
pub const COL_LABEL: &str = "label";
pub const COL_VIEW: &str = "view";
pub const COL_CROP: &str = "crop";
pub const COL_FLIP: &str = "flip";
pub const COL_BRIGHTNESS: &str = "brightness";
pub const COL_CONTRAST: &str = "contrast";
pub const COL_SATURATION: &str = "saturation";
pub const COL_HUE: &str = "hue";
pub const COL_JITTER_ORDER: &str = "jitter_order";
pub const COL_GRAYSCALE: &str = "grayscale";
pub const COL_EMBEDDING: &str = "embedding";
pub const COL_CLASS_NAME: &str = "class_name";
pub const COL_TEMPLATE: &str = "template";
pub const COL_PROMPT: &str = "prompt";

/// Name of the item field inside the list columns (`crop`, `embedding`).
pub const LIST_ITEM: &str = "item";

/// The Parquet leaf path of the embedding values: `embedding.list.item`.
pub fn embedding_column_path() -> ColumnPath {
    ColumnPath::new(vec![COL_EMBEDDING.into(), "list".into(), LIST_ITEM.into()])
}

/// Storage type of the embedding values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    #[default]
    F32,
    F16,
}

impl EmbeddingDtype {
    pub fn arrow_type(self) -> DataType {
        match self {
            EmbeddingDtype::F32 => DataType::Float32,
            EmbeddingDtype::F16 => DataType::Float16,
        }
    }

    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Float32 => Some(EmbeddingDtype::F32),
            DataType::Float16 => Some(EmbeddingDtype::F16),
            _ => None,
        }
    }

    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            EmbeddingDtype::F32 => 4,
            EmbeddingDtype::F16 => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingDtype::F32 => "f32",
            EmbeddingDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for EmbeddingDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EmbeddingDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(EmbeddingDtype::F32),
            "f16" | "float16" => Ok(EmbeddingDtype::F16),
            _ => Err(format!(
                "unknown embedding dtype `{s}` (expected f32 or f16)"
            )),
        }
    }
}

fn list_of(item: DataType, size: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new(LIST_ITEM, item, false)), size as i32)
}

/// The `embedding` field: a non-nullable fixed-size list of `dim` non-nullable values.
pub fn embedding_field(dim: usize, dtype: EmbeddingDtype) -> Field {
    Field::new(COL_EMBEDDING, list_of(dtype.arrow_type(), dim), false)
}

/// Schema of the rows of `images/part-*.parquet`.
pub fn image_schema(dim: usize, dtype: EmbeddingDtype) -> SchemaRef {
    let f32_col = |name: &str| Field::new(name, DataType::Float32, false);
    Arc::new(Schema::new(vec![
        Field::new(COL_PATH, DataType::Utf8, false),
        Field::new(COL_DOMAIN, DataType::Utf8, false),
        Field::new(COL_LABEL, DataType::Int32, false),
        Field::new(COL_VIEW, DataType::Int16, false),
        Field::new(COL_CROP, list_of(DataType::Float32, 4), false),
        Field::new(COL_FLIP, DataType::Boolean, false),
        f32_col(COL_BRIGHTNESS),
        f32_col(COL_CONTRAST),
        f32_col(COL_SATURATION),
        f32_col(COL_HUE),
        Field::new(COL_JITTER_ORDER, DataType::Utf8, false),
        Field::new(COL_GRAYSCALE, DataType::Boolean, false),
        embedding_field(dim, dtype),
    ]))
}

/// Schema of the rows of `texts.parquet`.
pub fn text_schema(dim: usize, dtype: EmbeddingDtype) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COL_LABEL, DataType::Int32, false),
        Field::new(COL_CLASS_NAME, DataType::Utf8, false),
        Field::new(COL_TEMPLATE, DataType::Utf8, false),
        Field::new(COL_DOMAIN, DataType::Utf8, true),
        Field::new(COL_PROMPT, DataType::Utf8, false),
        embedding_field(dim, dtype),
    ]))
}

/// The embedding dimension and dtype declared by a schema's `embedding` column.
pub fn embedding_layout(schema: &Schema) -> Result<(usize, EmbeddingDtype), String> {
    let field = schema
        .field_with_name(COL_EMBEDDING)
        .map_err(|_| format!("no `{COL_EMBEDDING}` column"))?;
    match field.data_type() {
        DataType::FixedSizeList(item, size) if *size > 0 => {
            EmbeddingDtype::from_arrow(item.data_type())
                .map(|dtype| (*size as usize, dtype))
                .ok_or_else(|| {
                    format!(
                        "`{COL_EMBEDDING}` holds {}, expected float32 or float16",
                        item.data_type()
                    )
                })
        }
        other => Err(format!(
            "`{COL_EMBEDDING}` is {other}, expected a fixed-size list of floats"
        )),
    }
}

/// Checks that `actual` has every column of `expected` with the same type. List item names and extra
/// columns are tolerated so files rewritten by other Parquet tools still read.
pub fn check_schema(actual: &Schema, expected: &Schema) -> Result<(), String> {
    for want in expected.fields() {
        let got = actual
            .field_with_name(want.name())
            .map_err(|_| format!("no `{}` column", want.name()))?;
        if !same_type(got.data_type(), want.data_type()) {
            return Err(format!(
                "column `{}` is {}, expected {}",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
    }
    Ok(())
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    let item = |f: &FieldRef| f.data_type().clone();
    match (a, b) {
        (DataType::FixedSizeList(fa, na), DataType::FixedSizeList(fb, nb)) => {
            na == nb && item(fa) == item(fb)
        }
        _ => a == b,
    }
}

fn jitter_letter(op: JitterOp) -> char {
    match op {
        JitterOp::Brightness => 'b',
        JitterOp::Contrast => 'c',
        JitterOp::Saturation => 's',
        JitterOp::Hue => 'h',
    }
}

/// Encodes a jitter order as 4 letters from `bcsh`, e.g. `[Brightness, Saturation, Contrast, Hue]` → `bsch`.
pub fn jitter_order_to_string(order: &[JitterOp; 4]) -> String {
    order.iter().map(|&op| jitter_letter(op)).collect()
}

/// Parses the 4-letter form written by [`jitter_order_to_string`].
pub fn parse_jitter_order(s: &str) -> Result<[JitterOp; 4], String> {
    let ops: Vec<JitterOp> = s
        .chars()
        .map(|c| match c {
            'b' => Ok(JitterOp::Brightness),
            'c' => Ok(JitterOp::Contrast),
            's' => Ok(JitterOp::Saturation),
            'h' => Ok(JitterOp::Hue),
            _ => Err(format!(
                "jitter order `{s}` has `{c}`, expected letters from `bcsh`"
            )),
        })
        .collect::<Result<_, _>>()?;
    ops.try_into()
        .map_err(|_| format!("jitter order `{s}` must have exactly 4 letters from `bcsh`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_parses_and_serialises_lowercase() {
        assert_eq!(
            "f16".parse::<EmbeddingDtype>().unwrap(),
            EmbeddingDtype::F16
        );
        assert_eq!(
            "F32".parse::<EmbeddingDtype>().unwrap(),
            EmbeddingDtype::F32
        );
        assert!("f64".parse::<EmbeddingDtype>().unwrap_err().contains("f64"));
        assert_eq!(
            serde_json::to_string(&EmbeddingDtype::F16).unwrap(),
            "\"f16\""
        );
        let back: EmbeddingDtype = serde_json::from_str("\"f32\"").unwrap();
        assert_eq!(back, EmbeddingDtype::F32);
        assert_eq!(EmbeddingDtype::F16.to_string(), "f16");
    }

    #[test]
    fn jitter_order_round_trips() {
        use JitterOp::*;
        let order = [Brightness, Saturation, Contrast, Hue];
        assert_eq!(jitter_order_to_string(&order), "bsch");
        assert_eq!(parse_jitter_order("bsch").unwrap(), order);
        assert!(parse_jitter_order("bsc").is_err());
        assert!(parse_jitter_order("bscx").is_err());
    }

    #[test]
    fn schemas_declare_their_embedding_layout() {
        let schema = image_schema(512, EmbeddingDtype::F16);
        assert_eq!(
            embedding_layout(&schema).unwrap(),
            (512, EmbeddingDtype::F16)
        );
        check_schema(&schema, &image_schema(512, EmbeddingDtype::F16)).unwrap();
        let err = check_schema(&schema, &image_schema(512, EmbeddingDtype::F32)).unwrap_err();
        assert!(err.contains("embedding"), "{err}");
        assert!(check_schema(&text_schema(8, EmbeddingDtype::F32), &schema).is_err());
    }
}
