//! The rasteriser: coverage masks of polygons and strokes, a float RGB canvas to blend them onto, box
//! blurs, and the supersampled-to-output downsampling that stands in for anti-aliasing.

use image::{Rgb as Px, RgbImage};

use super::palette::Rgb;
use super::shapes::P;

/// Per-pixel coverage in [0, 1].
#[derive(Debug, Clone)]
pub struct Mask {
    pub w: usize,
    pub h: usize,
    pub a: Vec<f32>,
}

impl Mask {
    pub fn new(w: usize, h: usize) -> Mask {
        Mask {
            w,
            h,
            a: vec![0.0; w * h],
        }
    }

    /// Fills `rings` under the even-odd rule, sampling at pixel centres (scanline crossings).
    pub fn fill(&mut self, rings: &[Vec<P>]) {
        let mut xs = Vec::new();
        for y in 0..self.h {
            let sy = y as f32 + 0.5;
            xs.clear();
            for ring in rings {
                let n = ring.len();
                for i in 0..n {
                    let (a, b) = (ring[i], ring[(i + 1) % n]);
                    if (a.1 <= sy) != (b.1 <= sy) {
                        xs.push(a.0 + (sy - a.1) / (b.1 - a.1) * (b.0 - a.0));
                    }
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let lo = (pair[0] - 0.5).ceil().max(0.0) as usize;
                let hi = ((pair[1] - 0.5).ceil().max(0.0) as usize).min(self.w);
                for x in lo..hi {
                    self.a[y * self.w + x] = 1.0;
                }
            }
        }
    }

    /// A stroke of `width` pixels along `pts`, its edge softened over one pixel. Coverage is the maximum
    /// over segments, so joints are not painted twice.
    pub fn stroke(&mut self, pts: &[P], closed: bool, width: f32) {
        let n = pts.len();
        let segments = if closed { n } else { n.saturating_sub(1) };
        for i in 0..segments {
            let w = self.w;
            segment_coverage(
                pts[i],
                pts[(i + 1) % n],
                width,
                self.w,
                self.h,
                |x, y, cover| {
                    let m = &mut self.a[y * w + x];
                    *m = m.max(cover);
                },
            );
        }
    }

    /// The mask shifted by whole pixels (for shadows).
    pub fn shifted(&self, dx: isize, dy: isize) -> Mask {
        let mut out = Mask::new(self.w, self.h);
        for y in 0..self.h {
            for x in 0..self.w {
                let (sx, sy) = (x as isize - dx, y as isize - dy);
                if sx >= 0 && sy >= 0 && (sx as usize) < self.w && (sy as usize) < self.h {
                    out.a[y * self.w + x] = self.a[sy as usize * self.w + sx as usize];
                }
            }
        }
        out
    }

    pub fn blur(&mut self, radius: usize, passes: usize) {
        for _ in 0..passes {
            box_blur(&mut self.a, self.w, self.h, radius);
        }
    }

    pub fn union(&mut self, other: &Mask) {
        for (a, b) in self.a.iter_mut().zip(&other.a) {
            *a = a.max(*b);
        }
    }
}

/// A float RGB image in [0, 1] per channel.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<Rgb>,
}

impl Canvas {
    /// A canvas whose pixels are `f(x, y)`.
    pub fn from_fn(w: usize, h: usize, f: impl Fn(usize, usize) -> Rgb) -> Canvas {
        let px = (0..w * h).map(|i| f(i % w, i / w)).collect();
        Canvas { w, h, px }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.w + x]
    }

    /// Blends colour `c(x, y)` in with the mask's coverage times `alpha`.
    pub fn paint_with(&mut self, m: &Mask, alpha: f32, c: impl Fn(usize, usize) -> Rgb) {
        for (i, &cover) in m.a.iter().enumerate() {
            let t = cover * alpha;
            if t > 0.0 {
                let (x, y) = (i % self.w, i / self.w);
                let src = c(x, y);
                let dst = &mut self.px[i];
                for k in 0..3 {
                    dst[k] += (src[k] - dst[k]) * t;
                }
            }
        }
    }

    pub fn paint(&mut self, m: &Mask, alpha: f32, c: Rgb) {
        self.paint_with(m, alpha, |_, _| c);
    }

    /// Adds light (for glows): `c` times coverage, saturating at white.
    pub fn add(&mut self, m: &Mask, gain: f32, c: Rgb) {
        for (dst, &cover) in self.px.iter_mut().zip(&m.a) {
            for k in 0..3 {
                dst[k] = (dst[k] + c[k] * cover * gain).min(1.0);
            }
        }
    }

    /// One brush dab: a short stroke blended straight onto the canvas (no full-size mask per dab).
    pub fn dab(&mut self, a: P, b: P, width: f32, c: Rgb, alpha: f32) {
        let w = self.w;
        segment_coverage(a, b, width, self.w, self.h, |x, y, cover| {
            let dst = &mut self.px[y * w + x];
            for k in 0..3 {
                dst[k] += (c[k] - dst[k]) * cover * alpha;
            }
        });
    }

    pub fn blur(&mut self, radius: usize) {
        for k in 0..3 {
            let mut plane: Vec<f32> = self.px.iter().map(|p| p[k]).collect();
            box_blur(&mut plane, self.w, self.h, radius);
            for (p, v) in self.px.iter_mut().zip(plane) {
                p[k] = v;
            }
        }
    }

    /// Averages `factor`×`factor` blocks into an 8-bit image (the anti-aliasing of the supersampling).
    pub fn downsample(&self, factor: usize) -> RgbImage {
        let (w, h) = (self.w / factor, self.h / factor);
        let norm = 1.0 / (factor * factor) as f32;
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let mut sum = [0.0f32; 3];
            for dy in 0..factor {
                for dx in 0..factor {
                    let p = self.get(x as usize * factor + dx, y as usize * factor + dy);
                    for k in 0..3 {
                        sum[k] += p[k];
                    }
                }
            }
            Px(sum.map(|v| (v * norm * 255.0).round().clamp(0.0, 255.0) as u8))
        })
    }
}

/// Calls `f(x, y, coverage)` for the pixels a segment of `width` covers, its edge softened over a pixel.
fn segment_coverage(
    a: P,
    b: P,
    width: f32,
    w: usize,
    h: usize,
    mut f: impl FnMut(usize, usize, f32),
) {
    let half = width / 2.0;
    let x0 = (a.0.min(b.0) - half - 1.0).floor().max(0.0) as usize;
    let y0 = (a.1.min(b.1) - half - 1.0).floor().max(0.0) as usize;
    let x1 = ((a.0.max(b.0) + half + 2.0).ceil().max(0.0) as usize).min(w);
    let y1 = ((a.1.max(b.1) + half + 2.0).ceil().max(0.0) as usize).min(h);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(1e-12);
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5 - a.0, y as f32 + 0.5 - a.1);
            let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
            let (ex, ey) = (px - t * dx, py - t * dy);
            let cover = (half + 0.5 - (ex * ex + ey * ey).sqrt()).clamp(0.0, 1.0);
            if cover > 0.0 {
                f(x, y, cover);
            }
        }
    }
}

/// A separable box blur with clamped edges; running sums make its cost independent of the radius.
fn box_blur(plane: &mut [f32], w: usize, h: usize, radius: usize) {
    if radius == 0 {
        return;
    }
    let r = radius as isize;
    let norm = 1.0 / (2 * radius + 1) as f32;
    let mut line = Vec::new();
    // Rows, then columns, through the same 1-D pass.
    for pass in 0..2 {
        let (len, count) = if pass == 0 { (w, h) } else { (h, w) };
        let at = |i: usize, j: usize| if pass == 0 { j * w + i } else { i * w + j };
        for j in 0..count {
            line.clear();
            line.extend((0..len).map(|i| plane[at(i, j)]));
            let get = |i: isize| line[i.clamp(0, len as isize - 1) as usize];
            let mut sum: f32 = (-r..=r).map(get).sum();
            for i in 0..len {
                plane[at(i, j)] = sum * norm;
                sum += get(i as isize + r + 1) - get(i as isize - r);
            }
        }
    }
}

/// Smooth value noise on a lattice with cell size `cell` pixels, in [0, 1].
pub struct ValueNoise {
    grid: Vec<f32>,
    gw: usize,
    cell: f32,
}

impl ValueNoise {
    pub fn new(rng: &mut super::rng::Rng, w: usize, h: usize, cell: f32) -> ValueNoise {
        let gw = (w as f32 / cell).ceil() as usize + 2;
        let gh = (h as f32 / cell).ceil() as usize + 2;
        let grid = (0..gw * gh).map(|_| rng.unit()).collect();
        ValueNoise { grid, gw, cell }
    }

    pub fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x / self.cell, y / self.cell);
        let (ix, iy) = (fx.floor().max(0.0) as usize, fy.floor().max(0.0) as usize);
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (tx, ty) = (smooth(fx - ix as f32), smooth(fy - iy as f32));
        let g = |i: usize, j: usize| self.grid[(j * self.gw + i).min(self.grid.len() - 1)];
        let top = g(ix, iy) + (g(ix + 1, iy) - g(ix, iy)) * tx;
        let bottom = g(ix, iy + 1) + (g(ix + 1, iy + 1) - g(ix, iy + 1)) * tx;
        top + (bottom - top) * ty
    }
}

/// Fractal noise: octaves of value noise, halving the cell each time, normalised to [0, 1].
pub struct Fbm(Vec<ValueNoise>);

impl Fbm {
    pub fn new(rng: &mut super::rng::Rng, w: usize, h: usize, cell: f32, octaves: usize) -> Fbm {
        Fbm((0..octaves)
            .map(|o| ValueNoise::new(rng, w, h, (cell / (1 << o) as f32).max(1.0)))
            .collect())
    }

    pub fn at(&self, x: f32, y: f32) -> f32 {
        let (mut sum, mut weight, mut amp) = (0.0, 0.0, 1.0);
        for octave in &self.0 {
            sum += octave.at(x, y) * amp;
            weight += amp;
            amp *= 0.5;
        }
        sum / weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_fills_its_pixels_and_a_hole_stays_empty() {
        let mut m = Mask::new(10, 10);
        let outer = vec![(1.0, 1.0), (9.0, 1.0), (9.0, 9.0), (1.0, 9.0)];
        let inner = vec![(4.0, 4.0), (6.0, 4.0), (6.0, 6.0), (4.0, 6.0)];
        m.fill(&[outer, inner]);
        let covered: f32 = m.a.iter().sum();
        assert_eq!(covered, 64.0 - 4.0);
        assert_eq!(m.a[5 * 10 + 5], 0.0);
        assert_eq!(m.a[2 * 10 + 2], 1.0);
    }

    #[test]
    fn blur_keeps_a_flat_plane_flat() {
        let mut plane = vec![0.5; 12 * 7];
        box_blur(&mut plane, 12, 7, 2);
        assert!(plane.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }
}
