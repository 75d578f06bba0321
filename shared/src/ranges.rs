//! The valid ranges of the binaries' real-valued settings (learning rates, loss weights, temperatures,
//! fractions). Each is a parser from an argument's text to its value or a one-line reason naming the range;
//! nothing here knows clap, but every function fits clap's `value_parser`, which prints the flag before
//! the reason: `invalid value '0' for '--lr <LR>': must be a finite number > 0`. Integer settings use
//! clap's own ranged parsers in the binaries.

/// A finite number > 0 (learning rates, temperatures).
pub fn positive(text: &str) -> Result<f64, String> {
    number(text, |v| v > 0.0, "a finite number > 0")
}

/// A finite number >= 0 (weight decay, loss weights).
pub fn non_negative(text: &str) -> Result<f64, String> {
    number(text, |v| v >= 0.0, "a finite number >= 0")
}

/// A number in [0, 1] (a weight of two complementary terms).
pub fn unit_interval(text: &str) -> Result<f64, String> {
    number(text, |v| (0.0..=1.0).contains(&v), "in [0, 1]")
}

/// A number strictly between 0 and 1 (a held-out fraction: both parts of every domain can be non-empty).
pub fn open_unit(text: &str) -> Result<f64, String> {
    number(text, |v| v > 0.0 && v < 1.0, "in (0, 1), 0 and 1 excluded")
}

/// `--shard I/N` (embed, distill sweep): 0 <= I < N.
pub fn shard(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{text}' is not a shard I/N with 0 <= I < N (e.g. 0/4)");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn number(text: &str, valid: fn(f64) -> bool, range: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a number; must be {range}"))?;
    if value.is_finite() && valid(value) {
        Ok(value)
    } else {
        Err(format!("must be {range}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!(shard("2/8"), Ok((2, 8)));
        assert_eq!(shard("0/1"), Ok((0, 1)));
        for bad in ["8/8", "1", "a/b", "0/0", "-1/4", "1/-4"] {
            assert!(shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boundaries() {
        assert_eq!(positive("5e-5"), Ok(5e-5));
        assert_eq!(positive("0"), Err("must be a finite number > 0".into()));
        for bad in ["-1", "inf", "NaN", "1e999"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(
            positive("x"),
            Err("not a number; must be a finite number > 0".into())
        );
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-0.1").is_err());
        assert!(non_negative("inf").is_err());
        assert_eq!(unit_interval("0"), Ok(0.0));
        assert_eq!(unit_interval("1"), Ok(1.0));
        assert_eq!(unit_interval("1.01"), Err("must be in [0, 1]".into()));
        assert!(unit_interval("-0.5").is_err());
        assert_eq!(open_unit("0.2"), Ok(0.2));
        for bad in ["0", "1", "-0.1", "1.5", "nan"] {
            assert_eq!(
                open_unit(bad),
                Err("must be in (0, 1), 0 and 1 excluded".into()),
                "{bad}"
            );
        }
    }
}
