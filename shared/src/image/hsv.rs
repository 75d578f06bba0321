//! Pillow's 8-bit RGB ↔ HSV conversions (`rgb2hsv_row` / `hsv2rgb` in libImaging/Convert.c), bit-exact,
//! for torchvision's `adjust_hue`. The reference functions mix `f32` and `f64` exactly as the C code does;
//! [`HueTables`] precomputes every division and product that depends on fewer than three channels, so
//! the per-pixel work is table look-ups, two multiplications and two roundings, with identical results
//! (checked exhaustively in the tests).

use std::sync::OnceLock;

/// Pillow's `rgb2hsv_row`.
pub(crate) fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    // fmod(h / 6 + 1, 1) for a value in [5/6, 2): subtracting 1 is exact there.
    let x = f64::from(h) / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    let uh = clip8((f64::from(h) * 255.0) as i32);
    let us = clip8((f64::from(s) * 255.0) as i32);
    [uh, us, maxc]
}

/// Pillow's `hsv2rgb` (the reference for [`HueTables::hsv_to_rgb`]).
#[cfg(test)]
pub(crate) fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let (sector, f) = sector_and_fraction(h);
    let fs = saturation_fraction(s);
    let vf = f64::from(v);
    let p = round_non_negative(vf * (1.0 - f64::from(fs)));
    let q = round_non_negative(vf * (1.0 - f64::from(fs * f)));
    let t = round_non_negative(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    let vals = [v, p, q, t];
    ARRANGE[usize::from(sector)].map(|i| vals[i])
}

/// `i % 6` and `f` of `hsv2rgb` for hue `h`.
fn sector_and_fraction(h: u8) -> (u8, f32) {
    let hf = f64::from(h) * 6.0 / 255.0;
    let i = hf as i32; // floor: hf >= 0
    ((i % 6) as u8, (hf - f64::from(i)) as f32)
}

fn saturation_fraction(s: u8) -> f32 {
    (f64::from(s) / 255.0) as f32
}

/// C's `round` (half away from zero) for `0 <= x <= 255`, clipped to 8 bits, without a libm call.
#[inline(always)]
fn round_non_negative(x: f64) -> u8 {
    let t = x as i32;
    // Branch-free: the comparison is a coin flip per pixel.
    clip8(t + i32::from(x - f64::from(t) >= 0.5))
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Look-up tables for the two conversions (about 450 KB, built once on first use).
pub(crate) struct HueTables {
    /// Hue byte by `[case][d][max - min]`, `case` = which channel is the maximum and which the minimum
    /// (Pillow's branch order), `d` = max minus the middle channel.
    hue: Vec<u8>,
    /// Saturation byte by `[max][max - min]`.
    sat: Vec<u8>,
    /// `hsv2rgb`'s sector and fraction `f` by hue, and `fs` by saturation.
    sector: [u8; 256],
    frac: [f32; 256],
    fs: [f32; 256],
}

/// The shared tables.
pub(crate) fn tables() -> &'static HueTables {
    static TABLES: OnceLock<HueTables> = OnceLock::new();
    TABLES.get_or_init(HueTables::build)
}

/// Output channel order per sector, as indices into `[v, p, q, t]`.
const ARRANGE: [[usize; 3]; 6] = [
    [0, 3, 1],
    [2, 0, 1],
    [1, 0, 3],
    [1, 2, 0],
    [3, 1, 0],
    [0, 1, 2],
];

impl HueTables {
    fn build() -> Self {
        let mut hue = vec![0u8; 6 << 16];
        for cr in 1..=255u8 {
            for d in 0..=cr {
                let m = cr - d;
                // A representative triple (max = cr, min = 0) of each case; the hue depends only on d, cr.
                let triples = [
                    (cr, m, 0),
                    (cr, 0, m),
                    (0, cr, m),
                    (m, cr, 0),
                    (0, m, cr),
                    (m, 0, cr),
                ];
                for (case, (r, g, b)) in triples.into_iter().enumerate() {
                    hue[case << 16 | usize::from(d) << 8 | usize::from(cr)] =
                        rgb_to_hsv(r, g, b)[0];
                }
            }
        }
        let mut sat = vec![0u8; 1 << 16];
        for max in 1..=255u8 {
            for cr in 1..=max {
                sat[usize::from(max) << 8 | usize::from(cr)] =
                    rgb_to_hsv(max, max - cr, max - cr)[1];
            }
        }
        HueTables {
            hue,
            sat,
            sector: std::array::from_fn(|h| sector_and_fraction(h as u8).0),
            frac: std::array::from_fn(|h| sector_and_fraction(h as u8).1),
            fs: std::array::from_fn(|s| saturation_fraction(s as u8)),
        }
    }

    /// Same as [`rgb_to_hsv`].
    #[inline(always)]
    pub(crate) fn rgb_to_hsv(&self, r: u8, g: u8, b: u8) -> [u8; 3] {
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        if max == min {
            return [0, 0, max];
        }
        // Pillow's branches: r is max (b min / not), else g is max (r min / not), else (r min / not).
        let case = if r == max {
            usize::from(b != min)
        } else if g == max {
            2 + usize::from(r != min)
        } else {
            4 + usize::from(r != min)
        };
        let (sum, max16, min16) = (
            u16::from(r) + u16::from(g) + u16::from(b),
            u16::from(max),
            u16::from(min),
        );
        let d = usize::from(max16 - (sum - max16 - min16));
        let cr = usize::from(max - min);
        let h = self.hue[case << 16 | d << 8 | cr];
        [h, self.sat[usize::from(max) << 8 | cr], max]
    }

    /// Same as [`hsv_to_rgb`].
    #[inline(always)]
    pub(crate) fn hsv_to_rgb(&self, h: u8, s: u8, v: u8) -> [u8; 3] {
        if s == 0 {
            return [v, v, v];
        }
        let (fs, f) = (self.fs[usize::from(s)], self.frac[usize::from(h)]);
        let vf = f64::from(v);
        let p = round_non_negative(vf * (1.0 - f64::from(fs)));
        let q = round_non_negative(vf * (1.0 - f64::from(fs * f)));
        let t = round_non_negative(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
        let vals = [v, p, q, t];
        ARRANGE[usize::from(self.sector[usize::from(h)])].map(|i| vals[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_fixtures;
    use ::image::{Rgb, RgbImage};

    #[test]
    fn hsv_and_hue_match_pillow() {
        // Pillow's convert("HSV") / convert("RGB") and torchvision's PIL adjust_hue, from
        // tests/fixtures/pillow/pillow.json (make_pillow_fixtures.py).
        let fixture = &test_fixtures::pillow()["hsv"];
        let px = test_fixtures::triples(&fixture["rgb"]);
        let hsv = test_fixtures::triples(&fixture["hsv"]);
        let back = test_fixtures::triples(&fixture["rgb_back"]);
        assert!(!px.is_empty() && px.len() == hsv.len() && px.len() == back.len());
        for i in 0..px.len() {
            let [r, g, b] = px[i];
            assert_eq!(rgb_to_hsv(r, g, b), hsv[i], "rgb {:?}", px[i]);
            let [h, s, v] = hsv[i];
            assert_eq!(hsv_to_rgb(h, s, v), back[i], "hsv {:?}", hsv[i]);
        }
        let img = RgbImage::from_fn(px.len() as u32, 1, |x, _| Rgb(px[x as usize]));
        let hue = test_fixtures::list(&fixture["hue"]);
        assert!(!hue.is_empty());
        for case in hue {
            let factor = test_fixtures::f32_of(&case["factor"]);
            let mut out = img.clone();
            crate::image::augment::adjust_hue(&mut out, factor);
            let got: Vec<[u8; 3]> = out.pixels().map(|p| p.0).collect();
            assert_eq!(got, test_fixtures::triples(&case["rgb"]), "hue {factor}");
        }
    }

    /// Every 8-bit triple through both conversions, table and reference alike, hashed; the hashes are those
    /// of Pillow's `convert("HSV")` / `convert("RGB")` on the same 4096×4096 images (all 2^24 triples), from
    /// tests/fixtures/pillow/pillow.json (make_pillow_fixtures.py).
    #[test]
    fn conversions_match_pillow_exhaustively() {
        use sha2::{Digest, Sha256};
        let want = &test_fixtures::pillow()["hsv_exhaustive"];
        let t = tables();
        let (mut fwd, mut back) = (Sha256::new(), Sha256::new());
        let mut a = Vec::with_capacity(3 << 16);
        let mut b = Vec::with_capacity(3 << 16);
        for x in 0..=255u8 {
            a.clear();
            b.clear();
            for y in 0..=255u8 {
                for z in 0..=255u8 {
                    let hsv = t.rgb_to_hsv(x, y, z);
                    let rgb = t.hsv_to_rgb(x, y, z);
                    assert_eq!(hsv, rgb_to_hsv(x, y, z), "rgb {x} {y} {z}");
                    assert_eq!(rgb, hsv_to_rgb(x, y, z), "hsv {x} {y} {z}");
                    a.extend_from_slice(&hsv);
                    b.extend_from_slice(&rgb);
                }
            }
            fwd.update(&a);
            back.update(&b);
        }
        let hex = |d: &[u8]| {
            d.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let field = |key: &str| test_fixtures::str_of(&want[key]).to_string();
        assert_eq!(hex(&fwd.finalize()), field("rgb_to_hsv_sha256_16"));
        assert_eq!(hex(&back.finalize()), field("hsv_to_rgb_sha256_16"));
    }
}
