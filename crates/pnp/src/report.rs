//! `report.html`: one self-contained HTML page per `restore`, `eval` and `sweep merge`, because
//! people look at restorations rather than read numbers.
//!
//! A [`Report`] holds the tables, rows of thumbnails (observed | restored | reference, each
//! row captioned with its PSNR / SSIM) and the plots. Every picture is embedded as a base64
//! PNG data URI (`data:image/png;base64,…`), so the file can be mailed or copied alone and no
//! link can go stale. Every text that comes from outside (image and kernel names, parameter
//! values, error messages) is escaped with `html-escape`; the page holds no script.
//!
//! The HTML is written with `format!` (a page of headings, tables and figures needs no
//! template engine): [`Report::to_html`] is the only place that writes tags.
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use html_escape::{encode_double_quoted_attribute, encode_text};
use tch::Tensor;

use crate::error::{PnpError, Result};

/// The name of the report file in an output folder.
pub const REPORT_FILE: &str = "report.html";

/// A PNG picture, embedded in the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    /// Caption under the picture (`observed`, `restored`, a plot's file name).
    pub label: String,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Picture {
    /// A thumbnail of an image tensor (`[1, C, H, W]` or `[C, H, W]`, values clipped to
    /// `[0, 1]`): scaled down (never up, aspect kept, triangle filter) so that its longer side
    /// is at most `max_side` pixels.
    pub fn thumbnail(label: &str, image: &Tensor, max_side: u32) -> Result<Picture> {
        let img = gradstep_data::image_io::to_u8_image(image)?;
        let img = if img.width().max(img.height()) > max_side {
            img.resize(max_side, max_side, image::imageops::FilterType::Triangle)
        } else {
            img
        };
        // Best compression with adaptive filters (`image` defaults to fast): 6 % smaller on
        // set3c's 192-pixel thumbnails (an eval report of 18 thumbnails: 1.83 → 1.71 MB).
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Adaptive,
        );
        img.write_with_encoder(encoder)
            .map_err(|e| PnpError::Invalid(format!("{label}: PNG encoding failed: {e}")))?;
        Ok(Picture {
            label: label.to_string(),
            png,
            width: img.width(),
            height: img.height(),
        })
    }

    /// A PNG file (a plot), checked to decode; labelled with its file name.
    pub fn from_png_file(path: &Path) -> Result<Picture> {
        let png = std::fs::read(path).map_err(|e| PnpError::file(path, e))?;
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .map_err(|e| PnpError::file(path, format!("not a readable PNG: {e}")))?;
        Ok(Picture {
            label: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            png,
            width: img.width(),
            height: img.height(),
        })
    }

    /// The `data:` URI of the picture.
    fn data_uri(&self) -> String {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&self.png)
        )
    }
}

/// A table: a header and rows of cells (plain text, escaped when written).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Heading above the table (may be empty).
    pub caption: String,
    /// Column names (none: a table without a header row).
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

/// One restoration shown side by side: observed | restored | reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    /// What was restored (image name, kernel, noise level…).
    pub title: String,
    /// Its scores, e.g. `PSNR 28.31 dB, SSIM 0.8123` (or `diverged`).
    pub scores: String,
    /// The pictures, left to right.
    pub pictures: Vec<Picture>,
}

/// The contents of one `report.html`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Page title and first heading.
    pub title: String,
    /// Paragraphs of plain text under the title (command, settings, warnings).
    pub notes: Vec<String>,
    /// Tables.
    pub tables: Vec<Table>,
    /// Restorations, one row each.
    pub images: Vec<ImageRow>,
    /// Plots (convergence curves, sweep figures).
    pub plots: Vec<Picture>,
}

impl Report {
    /// A report with a title and nothing else.
    pub fn new(title: &str) -> Self {
        Report {
            title: title.into(),
            ..Default::default()
        }
    }

    /// The page: one HTML5 document, pictures embedded, every text escaped.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let title = encode_text(&self.title);
        // `write!` into a String cannot fail.
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        );
        for note in &self.notes {
            let _ = writeln!(h, "<p>{}</p>", encode_text(note));
        }
        for table in &self.tables {
            write_table(&mut h, table);
        }
        if !self.images.is_empty() {
            h.push_str("<h2>Restorations</h2>\n");
            for row in &self.images {
                let _ = writeln!(
                    h,
                    "<section class=\"row\">\n<h3>{} <span class=\"scores\">{}</span></h3>\n<div class=\"pictures\">",
                    encode_text(&row.title),
                    encode_text(&row.scores)
                );
                for p in &row.pictures {
                    write_figure(&mut h, p);
                }
                h.push_str("</div>\n</section>\n");
            }
        }
        if !self.plots.is_empty() {
            h.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
            for p in &self.plots {
                write_figure(&mut h, p);
            }
            h.push_str("</div>\n");
        }
        h.push_str("</body>\n</html>\n");
        h
    }

    /// Writes the page to `path` atomically (the old report or the new one, never half).
    pub fn write(&self, path: &Path) -> Result<()> {
        gradstep_model::write_atomic(path, self.to_html().as_bytes())
            .map_err(|e| PnpError::file(path, e))
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #bbb;padding:2px 8px;text-align:right}\
th{background:#eee}td:first-child,th:first-child{text-align:left}\
.pictures,.plots{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0}figcaption{font-size:small;text-align:center}\
img{image-rendering:pixelated;border:1px solid #ccc}\
.plots img{image-rendering:auto;max-width:100%}\
.scores{font-weight:normal;font-size:small}";

fn write_table(h: &mut String, t: &Table) {
    if !t.caption.is_empty() {
        let _ = writeln!(h, "<h2>{}</h2>", encode_text(&t.caption));
    }
    h.push_str("<table>\n");
    if !t.header.is_empty() {
        h.push_str("<thead><tr>");
        for c in &t.header {
            let _ = write!(h, "<th>{}</th>", encode_text(c));
        }
        h.push_str("</tr></thead>\n");
    }
    h.push_str("<tbody>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for c in row {
            let _ = write!(h, "<td>{}</td>", encode_text(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// Pictures smaller than this (in pixels, longer side) are shown enlarged by an integer
/// factor (pixelated, not smoothed), so that a 64 × 64 crop is still visible.
const MIN_SHOWN_SIDE: u32 = 192;

fn write_figure(h: &mut String, p: &Picture) {
    let zoom = (MIN_SHOWN_SIDE / p.width.max(p.height).max(1)).max(1);
    let _ = writeln!(
        h,
        "<figure><img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
        p.data_uri(),
        p.width * zoom,
        p.height * zoom,
        encode_double_quoted_attribute(&p.label),
        encode_text(&p.label)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_never_grow() {
        let t = Tensor::ones([1, 3, 40, 100], (tch::Kind::Float, tch::Device::Cpu));
        let p = Picture::thumbnail("x", &t, 50).unwrap();
        assert_eq!((p.width, p.height), (50, 20));
        let small = Picture::thumbnail("x", &t, 500).unwrap();
        assert_eq!((small.width, small.height), (100, 40));
        let decoded = image::load_from_memory(&p.png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (50, 20));
    }
}
