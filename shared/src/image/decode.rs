//! Reading an image file into 8-bit RGB, safely: the format comes from the file's content, huge images are
//! refused before any pixel buffer is allocated, truncated JPEGs are reported (the decoder itself would fill
//! the missing rows silently), decoder panics become errors. No EXIF rotation is applied (Pillow's `open`
//! does not apply it either). Colour conversion is [`super::convert`]'s.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use thiserror::Error;

use super::convert::to_rgb;

/// Largest accepted image, in pixels: twice Pillow's `MAX_IMAGE_PIXELS`, the point where Pillow raises
/// `DecompressionBombError`.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Why an image file could not be turned into pixels. Every message is one line naming the file.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {path}: the file is empty")]
    Empty { path: PathBuf },
    #[error(
        "cannot decode {path}: cannot identify image file (not JPEG, PNG, GIF, BMP, WebP or TIFF)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("cannot decode {path}: image file is truncated")]
    Truncated { path: PathBuf },
    #[error(
        "cannot decode {path}: image size ({width}x{height} pixels) exceeds limit of {limit} pixels, \
         could be decompression bomb DOS attack"
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("cannot decode {path} ({format}): {message}")]
    Decode {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
}

impl DecodeError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DecodeError::Io { path, .. }
            | DecodeError::Empty { path }
            | DecodeError::UnknownFormat { path }
            | DecodeError::Truncated { path }
            | DecodeError::TooLarge { path, .. }
            | DecodeError::Decode { path, .. } => path,
        }
    }
}

/// Reads and decodes `path` into RGB (see the module docs).
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory file; `path` is only used in error messages.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, DecodeError> {
    let path_buf = || path.to_path_buf();
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path_buf() });
    }
    let format = ::image::guess_format(bytes)
        .map_err(|_| DecodeError::UnknownFormat { path: path_buf() })?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Gif
            | ImageFormat::Bmp
            | ImageFormat::WebP
            | ImageFormat::Tiff
    ) {
        return Err(DecodeError::UnknownFormat { path: path_buf() });
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Truncated { path: path_buf() });
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| decode_checked(bytes, format)));
    let fail = |message: String| DecodeError::Decode {
        path: path_buf(),
        format: format_name(format),
        message: message.replace('\n', " "),
    };
    match decoded {
        Ok(Ok(img)) => Ok(to_rgb(img, format == ImageFormat::Png && png_is_rgb(bytes))),
        Ok(Err(Failure::TooLarge(width, height))) => Err(DecodeError::TooLarge {
            path: path_buf(),
            width,
            height,
            limit: MAX_PIXELS,
        }),
        Ok(Err(Failure::Image(e))) if is_truncation(&e) => {
            Err(DecodeError::Truncated { path: path_buf() })
        }
        Ok(Err(Failure::Image(e))) => Err(fail(e.to_string())),
        Err(_) => Err(fail("the decoder crashed on this file".into())),
    }
}

enum Failure {
    TooLarge(u32, u32),
    Image(ImageError),
}

fn decode_checked(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, Failure> {
    let mut limits = Limits::default();
    // Room for the largest accepted image at 16 bits × 4 channels, plus the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(Failure::Image)?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Failure::TooLarge(w, h));
    }
    DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ImageError::Limits(_) => Failure::TooLarge(w, h),
        other => Failure::Image(other),
    })
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::WebP => "WebP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

fn is_truncation(e: &ImageError) -> bool {
    match e {
        ImageError::IoError(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        other => {
            let msg = other.to_string().to_ascii_lowercase();
            msg.contains("unexpected eof") || msg.contains("unexpected end of file")
        }
    }
}

/// Colour type 2 (truecolour) in the PNG header: Pillow opens it as `RGB` even with a `tRNS` chunk.
fn png_is_rgb(bytes: &[u8]) -> bool {
    bytes.len() > 25 && &bytes[12..16] == b"IHDR" && bytes[25] == 2
}

/// Whether a JPEG stream reaches its end-of-image marker (`FF D9`), walking the marker segments and the
/// entropy-coded data (where `FF` is always followed by a stuffed `00` or a restart marker). Bytes after
/// the EOI are allowed, as in Pillow.
pub fn jpeg_is_complete(data: &[u8]) -> bool {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    while i < data.len() {
        // Find the next marker, tolerating fill bytes and junk between segments.
        let Some(ff) = data[i..].iter().position(|&b| b == 0xFF) else {
            return false;
        };
        let mut j = i + ff + 1;
        while j < data.len() && data[j] == 0xFF {
            j += 1;
        }
        let Some(&marker) = data.get(j) else {
            return false;
        };
        i = j + 1;
        match marker {
            0xD9 => return true,
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let Some(len) = data
                    .get(i..i + 2)
                    .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
                else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                i += len;
                if marker == 0xDA {
                    i = match skip_entropy_coded(data, i) {
                        Some(next) => next,
                        None => return false,
                    };
                }
            }
        }
    }
    false
}

/// Index of the first marker (an `FF` not followed by `00`, `FF` or a restart marker) at or after `i`.
fn skip_entropy_coded(data: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let ff = i + data.get(i..)?.iter().position(|&b| b == 0xFF)?;
        match *data.get(ff + 1)? {
            0x00 | 0xD0..=0xD7 => i = ff + 2,
            0xFF => i = ff + 1,
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn sample() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(40, 24, |x, y| {
            ::image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
        }))
    }

    #[test]
    fn complete_and_truncated_jpegs() {
        let jpg = encode(&sample(), ImageFormat::Jpeg);
        assert!(jpeg_is_complete(&jpg));
        let mut padded = jpg.clone();
        padded.extend_from_slice(&[0, 0, 0, 0x12, 0xFF]);
        assert!(jpeg_is_complete(&padded), "junk after EOI is accepted");
        for cut in [jpg.len() - 1, jpg.len() - 2, jpg.len() / 2, 100, 3] {
            assert!(!jpeg_is_complete(&jpg[..cut]), "cut at {cut}");
            let err = decode_rgb(&jpg[..cut], Path::new("x.jpg")).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
        let ok = decode_rgb(&padded, Path::new("x.jpg")).unwrap();
        assert_eq!(ok.dimensions(), (40, 24));
    }

    #[test]
    fn format_comes_from_content() {
        let png = encode(&sample(), ImageFormat::Png);
        let img = decode_rgb(&png, Path::new("really-a-png.jpg")).unwrap();
        assert_eq!(img, sample().to_rgb8());
        let bmp = encode(&sample(), ImageFormat::Bmp);
        assert_eq!(
            decode_rgb(&bmp, Path::new("noext")).unwrap(),
            sample().to_rgb8()
        );
    }

    #[test]
    fn bad_inputs_are_errors_with_the_file_name() {
        let p = Path::new("dir/bad.png");
        let msg = |e: DecodeError| e.to_string();
        assert!(msg(decode_rgb(b"", p).unwrap_err()).contains("dir/bad.png: the file is empty"));
        let e = decode_rgb(b"hello, not an image at all", p).unwrap_err();
        assert!(matches!(e, DecodeError::UnknownFormat { .. }), "{e}");
        let png = encode(&sample(), ImageFormat::Png);
        let e = decode_rgb(&png[..png.len() / 2], p).unwrap_err();
        assert!(!msg(e).contains('\n'));
        let mut corrupt = png.clone();
        for b in corrupt.iter_mut().skip(40).step_by(7) {
            *b ^= 0x5A;
        }
        assert!(decode_rgb(&corrupt, p).is_err());
        let e = load_rgb(Path::new("/nonexistent/dir/x.jpg")).unwrap_err();
        assert!(msg(e).starts_with("cannot read /nonexistent/dir/x.jpg: "));
        // Every prefix of valid files of each format: errors or images, never a panic.
        for format in [
            ImageFormat::Png,
            ImageFormat::Gif,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ] {
            let data = encode(&sample(), format);
            for cut in (0..data.len()).step_by(13) {
                let _ = decode_rgb(&data[..cut], p);
            }
        }
    }

    #[test]
    fn huge_dimensions_are_refused_before_allocating() {
        // A valid PNG header claiming 20000 x 20000 pixels, with no data.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        let ihdr = [
            &20000u32.to_be_bytes()[..],
            &20000u32.to_be_bytes()[..],
            &[8, 2, 0, 0, 0],
        ]
        .concat();
        let mut crc_input = b"IHDR".to_vec();
        crc_input.extend_from_slice(&ihdr);
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        // The start of an IDAT chunk, so that the header parses.
        png.extend_from_slice(&[0, 0, 0, 2]);
        png.extend_from_slice(b"IDAT\x78\x9c");
        png.extend_from_slice(&crc32(b"IDAT\x78\x9c").to_be_bytes());
        let e = decode_rgb(&png, Path::new("bomb.png")).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooLarge { width: 20000, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("decompression bomb"));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file_is_an_io_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vl2v-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("locked.png");
        std::fs::write(&f, encode(&sample(), ImageFormat::Png)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
        let result = load_rgb(&f);
        std::fs::remove_dir_all(&dir).ok();
        // Root can read anything; then the file simply decodes.
        if let Err(e) = result {
            assert!(matches!(e, DecodeError::Io { .. }), "{e}");
            assert!(e.to_string().contains("locked.png"));
        }
    }
}
