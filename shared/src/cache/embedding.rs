//! The `embedding` column: building it from `f32` rows and reading it back as `f32`, whatever the stored dtype.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float16Array, Float32Array};
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type};
use half::f16;

use super::schema::{EmbeddingDtype, LIST_ITEM};

/// Checks that every embedding has `dim` values; names the first offending row.
pub(crate) fn check_dims<'a>(
    dim: usize,
    embeddings: impl Iterator<Item = &'a [f32]>,
) -> Result<(), String> {
    if dim == 0 || dim > i32::MAX as usize {
        return Err(format!("embedding dimension {dim} is out of range"));
    }
    for (row, e) in embeddings.enumerate() {
        if e.len() != dim {
            return Err(format!(
                "row {row} has a {}-d embedding, expected {dim}",
                e.len()
            ));
        }
    }
    Ok(())
}

/// Builds the `embedding` column; every slice must already have `dim` values (see [`check_dims`]).
pub(crate) fn embedding_array<'a>(
    dim: usize,
    dtype: EmbeddingDtype,
    embeddings: impl Iterator<Item = &'a [f32]>,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let values: ArrayRef = match dtype {
        EmbeddingDtype::F32 => {
            let flat: Vec<f32> = embeddings.flatten().copied().collect();
            Arc::new(Float32Array::from(flat))
        }
        EmbeddingDtype::F16 => {
            let flat: Vec<f16> = embeddings.flatten().map(|&x| f16::from_f32(x)).collect();
            Arc::new(Float16Array::from(flat))
        }
    };
    let item = Arc::new(Field::new(LIST_ITEM, dtype.arrow_type(), false));
    Ok(Arc::new(FixedSizeListArray::try_new(
        item, dim as i32, values, None,
    )?))
}

/// The values of a fixed-size list column of float32 or float16, flattened row-major and widened to `f32`.
pub(crate) fn list_values_f32(array: &dyn Array) -> Result<Vec<f32>, String> {
    let list = array.as_fixed_size_list_opt().ok_or_else(|| {
        format!(
            "column is {}, expected a fixed-size list",
            array.data_type()
        )
    })?;
    if list.null_count() > 0 {
        return Err("column has null lists".into());
    }
    let values = list.values();
    if values.null_count() > 0 {
        return Err("column has null values".into());
    }
    match values.data_type() {
        DataType::Float32 => Ok(values.as_primitive::<Float32Type>().values().to_vec()),
        DataType::Float16 => Ok(values
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|x| x.to_f32())
            .collect()),
        other => Err(format!("list holds {other}, expected float32 or float16")),
    }
}
