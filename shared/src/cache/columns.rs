//! Typed, null-checked access to a record batch's columns by name, with errors as plain reasons.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, StringArray};
use arrow::datatypes::ArrowPrimitiveType;
use arrow::record_batch::RecordBatch;

pub(crate) struct Columns<'a> {
    pub(crate) batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    /// A column that must exist and have no nulls.
    pub(crate) fn get(&self, name: &str) -> Result<&'a ArrayRef, String> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| format!("no `{name}` column"))?;
        if column.null_count() > 0 {
            return Err(format!("column `{name}` has nulls"));
        }
        Ok(column)
    }

    /// A nullable utf8 column.
    pub(crate) fn nullable_strings(&self, name: &str) -> Result<&'a StringArray, String> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| format!("no `{name}` column"))?
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not utf8"))
    }

    pub(crate) fn strings(&self, name: &str) -> Result<&'a StringArray, String> {
        self.get(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not utf8"))
    }

    pub(crate) fn bools(&self, name: &str) -> Result<&'a BooleanArray, String> {
        self.get(name)?
            .as_boolean_opt()
            .ok_or_else(|| format!("column `{name}` is not bool"))
    }

    pub(crate) fn primitive<T: ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<&'a PrimitiveArray<T>, String> {
        self.get(name)?
            .as_primitive_opt::<T>()
            .ok_or_else(|| format!("column `{name}` is not {}", T::DATA_TYPE))
    }
}
