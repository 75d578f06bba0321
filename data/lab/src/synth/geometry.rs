//! Point lists for the shapes: ellipses, arcs, rectangles and rotation, in any frame (y down).

use std::f32::consts::TAU;

/// A point (x, y), y pointing down as in images.
pub type P = (f32, f32);

pub fn ellipse(cx: f32, cy: f32, rx: f32, ry: f32) -> Vec<P> {
    arc(cx, cy, rx, ry, 0.0, TAU, 48)
}

/// Points along an elliptical arc from angle `a0` to `a1` (inclusive), angles clockwise on screen.
pub fn arc(cx: f32, cy: f32, rx: f32, ry: f32, a0: f32, a1: f32, n: usize) -> Vec<P> {
    (0..=n)
        .map(|i| {
            let a = a0 + (a1 - a0) * i as f32 / n as f32;
            (cx + rx * a.cos(), cy + ry * a.sin())
        })
        .collect()
}

pub fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Vec<P> {
    vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
}

pub fn rotated(pts: Vec<P>, (cx, cy): P, angle: f32) -> Vec<P> {
    let (s, c) = angle.sin_cos();
    pts.into_iter()
        .map(|(x, y)| {
            let (dx, dy) = (x - cx, y - cy);
            (cx + dx * c - dy * s, cy + dx * s + dy * c)
        })
        .collect()
}
