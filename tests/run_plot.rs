//! Plots: the SVG is well-formed and carries the title, axis names, legend and one line per
//! finite run of each series; the PNG decodes at the right size with each series drawn in its
//! colour and with text (title, axis names, legend) drawn from the shipped font, so on any
//! machine; a figure puts several charts in one picture.

use pgsrm::run::plot::{
    Chart, Figure, HEIGHT, PALETTE, Series, WIDTH, figure_rgb, figure_size, figure_svg, png, rgb,
    svg, write_figure,
};

fn chart() -> Chart {
    Chart {
        title: "Mean reward <per> update & more".into(),
        x_label: "update".into(),
        y_label: "reward".into(),
        series: vec![
            Series {
                name: "pgsrm".into(),
                points: (1..=20)
                    .map(|i| (i as f64, 0.2 + 0.01 * i as f64))
                    .collect(),
                band: (1..=20)
                    .map(|i| (i as f64, 0.1 + 0.01 * i as f64, 0.3 + 0.01 * i as f64))
                    .collect(),
            },
            Series {
                name: "binary".into(),
                points: (1..=20).map(|i| (i as f64, 0.5)).collect(),
                band: vec![],
            },
            Series {
                name: "with a gap".into(),
                points: vec![(1.0, 0.0), (2.0, f64::NAN), (3.0, 0.1), (4.0, 0.12)],
                band: vec![],
            },
        ],
    }
}

/// Checks that every tag is closed in order and returns the opening tags with their attributes.
fn tags(doc: &str) -> Vec<String> {
    let body = doc
        .find("<svg")
        .map(|i| &doc[i..])
        .expect("an <svg> element");
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let j = rest[i..].find('>').expect("unclosed '<'") + i;
        let tag = &rest[i + 1..j];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            seen.push(tag.to_string());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[j + 1..];
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    seen
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2])
}

#[test]
fn svg_is_well_formed_with_title_labels_legend_and_lines() {
    let doc = svg(&chart()).unwrap();
    let seen = tags(&doc);
    let doc = doc.replace('\n', "");
    assert_eq!(seen.iter().filter(|t| t.starts_with("svg")).count(), 1);
    for text in [
        "Mean reward &lt;per&gt; update &amp; more",
        ">update<",
        ">reward<",
        ">pgsrm<",
        ">binary<",
        ">with a gap<",
    ] {
        assert!(doc.contains(text), "{text} is missing");
    }
    assert!(!doc.contains("NaN"));
    // One line per finite run of points, in the series' colour: 1 for each of the first two
    // series, 1 more for the third (its single point before the gap is a dot). The legend adds
    // one short line per series.
    let lines = |c: [u8; 3]| {
        seen.iter()
            .filter(|t| t.starts_with("polyline") && t.to_uppercase().contains(&hex(c)))
            .count()
    };
    assert_eq!(lines(PALETTE[0]), 2);
    assert_eq!(lines(PALETTE[1]), 2);
    assert_eq!(lines(PALETTE[2]), 2);
    // The band is one filled polygon.
    assert_eq!(seen.iter().filter(|t| t.starts_with("polygon")).count(), 1);
}

/// Pixels darker than light grey inside the box (x0, y0)..(x1, y1) of an RGB image `w` wide.
fn dark_pixels(px: &[u8], w: usize, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (y * w + x) * 3))
        .filter(|&i| px[i] < 120 && px[i + 1] < 120 && px[i + 2] < 120)
        .count()
}

#[test]
fn png_decodes_at_the_right_size_with_the_series_colours_and_text() {
    let bytes = png(&chart()).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = &buf[..info.buffer_size()];
    assert_eq!(px, rgb(&chart()).unwrap().as_slice());
    let count = |c: [u8; 3]| px.chunks_exact(3).filter(|p| *p == c).count();
    // Each line is long enough to leave hundreds of pixels of its exact colour.
    assert!(count(PALETTE[0]) > 300, "{}", count(PALETTE[0]));
    assert!(count(PALETTE[1]) > 300, "{}", count(PALETTE[1]));
    // The band is a light tint of the first colour, between the white background and the colour.
    let tint = px
        .chunks_exact(3)
        .filter(|p| p[0] > PALETTE[0][0] && p[0] < 255 && p[2] > p[0] && p[2] < 255);
    assert!(tint.count() > 1000);
    // Text is drawn: the title across the top, the y axis name down the left edge, the legend's
    // names on the right. None of these places holds anything else dark.
    let w = WIDTH as usize;
    assert!(dark_pixels(px, w, (100, 0, 550, 35)) > 150, "title");
    assert!(dark_pixels(px, w, (0, 100, 25, 350)) > 40, "y axis name");
    assert!(dark_pixels(px, w, (w - 115, 20, w, 120)) > 150, "legend");
}

#[test]
fn a_figure_holds_every_chart_in_its_grid() {
    let mut second = chart();
    second.title = "Second".into();
    second.series.truncate(2);
    let fig = Figure {
        title: "Two tasks".into(),
        charts: vec![chart(), second.clone(), second],
        columns: 2,
    };
    let (w, h) = figure_size(&fig);
    assert!(w > h, "two columns, two rows of wide panels");
    let px = figure_rgb(&fig).unwrap();
    assert_eq!(px.len(), (w * h * 3) as usize);
    // Each of the three panels draws the first series' line: its colour shows in every quarter
    // of the picture but the empty fourth.
    let (w, h) = (w as usize, h as usize);
    let in_quarter = |qx: usize, qy: usize| {
        let top = 40 + qy * (h - 40) / 2;
        (top..top + (h - 40) / 2)
            .flat_map(|y| (qx * w / 2..(qx + 1) * w / 2).map(move |x| (y * w + x) * 3))
            .filter(|&i| px[i..i + 3] == PALETTE[0])
            .count()
    };
    assert!(in_quarter(0, 0) > 100 && in_quarter(1, 0) > 100 && in_quarter(0, 1) > 100);
    assert_eq!(in_quarter(1, 1), 0);
    let doc = figure_svg(&fig).unwrap();
    tags(&doc);
    let doc = doc.replace('\n', "");
    assert!(doc.contains(">Two tasks<") && doc.matches(">Second<").count() == 2);
    let dir = std::env::temp_dir().join(format!("pgsrm-figure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_figure(&fig, &dir, "overall").unwrap();
    assert!(dir.join("overall.svg").is_file() && dir.join("overall.png").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
