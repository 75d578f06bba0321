//! Hand-drawn lines: outlines resampled evenly and displaced by smooth noise, so a pencil or a mouse
//! doodle never follows the exact geometry.

use std::f32::consts::TAU;

use super::rng::Rng;
use super::shapes::P;

/// Points every `spacing` pixels along the polyline (closing it when `closed`), ends included.
pub fn resample(pts: &[P], closed: bool, spacing: f32) -> Vec<P> {
    let mut path = pts.to_vec();
    if closed {
        if let Some(&first) = pts.first() {
            path.push(first);
        }
    }
    let mut out = Vec::new();
    let Some(&start) = path.first() else {
        return out;
    };
    out.push(start);
    let mut carried = 0.0;
    for seg in path.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let mut t = spacing - carried;
        while t <= len {
            let f = t / len;
            out.push((a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f));
            t += spacing;
        }
        carried = len - (t - spacing);
    }
    if let Some(&end) = path.last() {
        out.push(end);
    }
    out
}

/// Displaces points by two sums of sines of their index: a smooth drift of about `amp` pixels whose
/// wavelength is about `wavelength` points.
pub fn wobble(pts: &[P], rng: &mut Rng, amp: f32, wavelength: f32) -> Vec<P> {
    let mut waves = [[0.0f32; 3]; 4];
    for w in &mut waves {
        *w = [
            rng.range(0.6, 1.6) * TAU / wavelength,
            rng.range(0.0, TAU),
            rng.range(0.5, 1.0),
        ];
    }
    let at = |i: f32, ws: &[[f32; 3]]| {
        ws.iter()
            .map(|w| w[2] * (w[0] * i + w[1]).sin())
            .sum::<f32>()
            * 0.5
    };
    pts.iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            let i = i as f32;
            (x + amp * at(i, &waves[..2]), y + amp * at(i, &waves[2..]))
        })
        .collect()
}

/// A hand-drawn version of an outline: a closed ring starts at a random point and overshoots its start,
/// as a pen stroke does.
pub fn hand_drawn(
    pts: &[P],
    closed: bool,
    rng: &mut Rng,
    spacing: f32,
    amp: f32,
    wavelength: f32,
) -> Vec<P> {
    let mut path = resample(pts, closed, spacing);
    if closed && path.len() > 3 {
        path.pop();
        let start = rng.below(path.len());
        path.rotate_left(start);
        let over = 1 + rng.below(3);
        let head: Vec<P> = path.iter().take(over).copied().collect();
        path.extend(head);
    }
    wobble(&path, rng, amp, wavelength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_spaces_points_evenly() {
        let pts = resample(&[(0.0, 0.0), (10.0, 0.0)], false, 2.0);
        assert_eq!(pts.len(), 7);
        assert!(pts
            .windows(2)
            .take(5)
            .all(|w| (w[1].0 - w[0].0 - 2.0).abs() < 1e-5));
        let ring = resample(&[(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)], true, 1.0);
        assert_eq!(ring.first(), ring.last());
        assert!(ring.len() >= 16);
    }
}
