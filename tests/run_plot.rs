//! Plots: the SVG is well-formed and holds the expected series; the PNG decodes at the right size
//! with each series drawn in its colour.

use pgsrm::run::plot::{Chart, HEIGHT, PALETTE, Series, WIDTH, png, rgb, svg, ticks};

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
                points: vec![(1.0, 0.0), (2.0, f64::NAN), (3.0, 0.1)],
                band: vec![],
            },
        ],
    }
}

/// Checks that every tag is closed in order and returns the opening tags' names with their text.
fn tags(doc: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = doc;
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

#[test]
fn svg_is_well_formed_with_one_path_per_series() {
    let doc = svg(&chart());
    assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    let seen = tags(&doc);
    assert_eq!(seen.iter().filter(|t| t.starts_with("svg")).count(), 1);
    let series: Vec<&String> = seen
        .iter()
        .filter(|t| t.contains("class=\"series\""))
        .collect();
    assert_eq!(series.len(), 3);
    for (t, name) in series.iter().zip(["pgsrm", "binary", "with a gap"]) {
        assert!(t.contains(&format!("data-name=\"{name}\"")), "{t}");
    }
    // 20 points: one move and 19 line segments; the NaN splits the third series in two moves.
    let d = |t: &str| {
        t.split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(d(series[0]).matches('M').count(), 1);
    assert_eq!(d(series[0]).matches('L').count(), 19);
    assert_eq!(d(series[2]).matches('M').count(), 2);
    assert_eq!(
        seen.iter().filter(|t| t.contains("class=\"band\"")).count(),
        1
    );
    assert!(doc.contains("&lt;per&gt; update &amp; more"));
    assert!(!doc.contains("NaN"));
}

#[test]
fn png_decodes_at_the_right_size_with_the_series_colours() {
    let bytes = png(&chart()).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = &buf[..info.buffer_size()];
    assert_eq!(px, rgb(&chart()).as_slice());
    let count = |c: [u8; 3]| px.chunks_exact(3).filter(|p| *p == c).count();
    // Each line is long enough to leave hundreds of pixels of its exact colour.
    assert!(count(PALETTE[0]) > 300, "{}", count(PALETTE[0]));
    assert!(count(PALETTE[1]) > 300, "{}", count(PALETTE[1]));
    // The flat binary line sits on one row in the middle of the plot: find it there.
    let row_with = |c: [u8; 3]| {
        (0..HEIGHT as usize)
            .max_by_key(|&y| {
                px[y * WIDTH as usize * 3..(y + 1) * WIDTH as usize * 3]
                    .chunks_exact(3)
                    .filter(|p| *p == c)
                    .count()
            })
            .unwrap()
    };
    let y = row_with(PALETTE[1]);
    assert!(y > 40 && y < HEIGHT as usize - 55, "{y}");
    // The band is a light tint of the first colour, between the white background and the colour.
    let tint = px
        .chunks_exact(3)
        .filter(|p| p[0] > PALETTE[0][0] && p[0] < 255 && p[2] > p[0] && p[2] < 255);
    assert!(tint.count() > 1000);
}

#[test]
fn ticks_are_round_and_cover_the_range() {
    assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    let t = ticks(3.0, 97.0);
    assert_eq!(t, vec![20.0, 40.0, 60.0, 80.0]);
    assert_eq!(ticks(5.0, 5.0), vec![5.0]);
}
