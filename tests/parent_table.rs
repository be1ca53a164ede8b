//! The table parent: lookups, and errors that name the file, the line or the prompt.

use pgsrm::reward::parent::{Parent, TableParent};

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsrm-parent-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn answers_from_a_file() {
    let path = temp_file(
        "good.jsonl",
        "{\"prompt\": \"a\", \"answer\": \"x\"}\n\n{\"prompt\": \"b \", \"answer\": \"y z\"}\n",
    );
    let mut t = TableParent::open(&path).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.answer("a").unwrap(), "x");
    assert_eq!(t.answer("b ").unwrap(), "y z");
    assert_eq!(t.answers(&["b ", "a"]).unwrap(), vec!["y z", "x"]);
    assert!(t.name().contains("good.jsonl"));
}

#[test]
fn a_missing_prompt_is_an_error_naming_it() {
    let mut t = TableParent::parse("{\"prompt\": \"a\", \"answer\": \"x\"}", "mem").unwrap();
    let err = format!("{:#}", t.answer("the opposite of 'up'").unwrap_err());
    assert!(
        err.contains("the opposite of 'up'") && err.contains("mem"),
        "{err}"
    );
    // Lookups are exact: a prompt differing in white space is a different prompt.
    assert!(t.answer("a ").is_err());
}

#[test]
fn a_missing_file_is_named() {
    let path = std::env::temp_dir().join("pgsrm-no-such-table.jsonl");
    let err = format!("{:#}", TableParent::open(&path).err().unwrap());
    assert!(err.contains("pgsrm-no-such-table.jsonl"), "{err}");
}

#[test]
fn malformed_lines_are_named() {
    let cases = [
        (
            "{\"prompt\": \"a\", \"answer\": \"x\"}\n{\"prompt\": \"b\"}\n",
            "line 2",
        ),
        (
            "{\"prompt\": \"a\", \"answer\": \"x\"}\n\nnot json\n",
            "line 3",
        ),
        ("42\n", "line 1"),
        (
            "{\"prompt\": \"a\", \"answer\": \"x\"}\n{\"prompt\": \"a\", \"answer\": \"y\"}\n",
            "line 2",
        ),
    ];
    for (i, (text, line)) in cases.iter().enumerate() {
        let path = temp_file(&format!("bad{i}.jsonl"), text);
        let err = format!("{:#}", TableParent::open(&path).err().unwrap());
        assert!(err.contains(&format!("bad{i}.jsonl")), "{err}");
        assert!(err.contains(line), "{err}");
    }
    let empty = temp_file("empty.jsonl", "\n");
    let err = format!("{:#}", TableParent::open(&empty).err().unwrap());
    assert!(
        err.contains("empty.jsonl") && err.contains("no entries"),
        "{err}"
    );
}

#[test]
fn parents_by_spec() {
    use pgsrm::reward::parent::{ParentOptions, parent_by_spec};
    let task = pgsrm::tasks::by_name("colors").unwrap();
    let opts = ParentOptions::default();
    let mut p = parent_by_spec("table", &task, &opts).unwrap();
    let e = task.held_out()[0];
    assert_eq!(p.answer(e.prompt).unwrap(), e.answer);
    let file = temp_file("spec.jsonl", "{\"prompt\": \"q\", \"answer\": \"r\"}\n");
    let mut p = parent_by_spec(&format!("table:{}", file.display()), &task, &opts).unwrap();
    assert_eq!(p.answer("q").unwrap(), "r");
    let p = parent_by_spec("openai:some-model", &task, &opts).unwrap();
    assert!(p.name().contains("some-model"));
    let err = parent_by_spec("oracle", &task, &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("oracle") && err.contains("local:MODEL"),
        "{err}"
    );
    assert!(parent_by_spec("local", &task, &opts).is_err());
}
