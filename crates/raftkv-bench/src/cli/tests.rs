//! Unit tests of the command line: good and bad inputs.

use super::*;

fn parse(line: &str) -> Result<Command, CliError> {
    parse_args(line.split_whitespace())
}

/// The message of a refused line (clap's text or ours).
fn refused(line: &str) -> String {
    match parse(line) {
        Err(error) => error.to_string(),
        Ok(command) => panic!("{line:?} parsed to {command:?}"),
    }
}

/// `line` is refused with a message that names every one of `words`.
fn refused_naming(line: &str, words: &[&str]) {
    let message = refused(line);
    for word in words {
        assert!(message.contains(word), "{line:?}: {word:?} not in {message:?}");
    }
}

fn load(line: &str) -> LoadConfig {
    match parse(line) {
        Ok(Command::Load(config)) => config,
        other => panic!("{line:?} parsed to {other:?}"),
    }
}

#[test]
fn durations_with_units() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
}

#[test]
fn bad_durations_are_refused() {
    for text in ["", "30", "s", "0s", "-1s", "10x", "99999999999999999999s"] {
        assert!(parse_duration(text).is_err(), "{text:?} was accepted");
    }
    assert!(parse_duration("30").unwrap_err().contains("unit"));
    assert!(parse_duration("0s").unwrap_err().contains("greater than zero"));
}

#[test]
fn put_defaults() {
    let config = load("put --endpoints http://127.0.0.1:2379");
    let expected = LoadConfig::new(Workload::Put, vec!["http://127.0.0.1:2379".to_string()]);
    assert_eq!(config, expected);
    assert_eq!((config.clients, config.conns, config.value_size), (64, 8, 256));
}

#[test]
fn every_load_flag() {
    let config = load(
        "txn --endpoints a:1,http://b:2 --clients 16 --conns=4 --duration 2m --total 1000 \
         --value-size 0 --key-space 10 --key-prefix k/ --json out.json",
    );
    assert_eq!(config.workload, Workload::Txn);
    assert_eq!(config.endpoints, vec!["http://a:1", "http://b:2"]);
    assert_eq!(config.clients, 16);
    assert_eq!(config.conns, 4);
    assert_eq!(config.duration, Duration::from_secs(120));
    assert_eq!(config.total, Some(1000));
    assert_eq!(config.value_size, 0);
    assert_eq!(config.key_space, 10);
    assert_eq!(config.key_prefix, "k/");
    assert_eq!(config.json, Some(PathBuf::from("out.json")));
}

#[test]
fn get_consistency_and_prefill() {
    let config = load("get --endpoints x:1 --consistency s --prefill");
    assert_eq!(
        config.workload,
        Workload::Get {
            consistency: Consistency::Serializable,
            prefill: true
        }
    );
    assert_eq!(config.workload.name(), "get-serializable");
    let config = load("get --endpoints x:1");
    assert_eq!(config.workload.name(), "get");
}

#[test]
fn range_reads_the_whole_prefix_at_either_consistency() {
    let config = load("range --endpoints x:1 --key-prefix list/");
    assert_eq!(
        config.workload,
        Workload::Range {
            consistency: Consistency::Linearizable,
            limit: 0,
            count_only: false,
        }
    );
    assert_eq!(config.workload.name(), "range");
    assert_eq!(config.key_prefix, "list/");
    let config = load("range --endpoints x:1 --consistency s --limit 500 --count-only");
    assert_eq!(config.workload.name(), "range-serializable");
    assert_eq!(
        config.workload,
        Workload::Range {
            consistency: Consistency::Serializable,
            limit: 500,
            count_only: true,
        }
    );
}

#[test]
fn conns_are_capped_at_clients() {
    assert_eq!(load("put --endpoints x:1 --clients 2").conns, 2);
}

#[test]
fn floor_flags() {
    assert_eq!(
        parse("floor --dir /tmp/x --count 10 --json f.json").ok(),
        Some(Command::Floor(FloorConfig {
            dir: PathBuf::from("/tmp/x"),
            count: 10,
            json: Some(PathBuf::from("f.json")),
        }))
    );
    assert_eq!(
        parse("floor --dir d").ok(),
        Some(Command::Floor(FloorConfig {
            dir: PathBuf::from("d"),
            count: 2000,
            json: None,
        }))
    );
}

#[test]
fn help() {
    for line in [
        "--help",
        "put --clients 3 -h",
        "get --help",
        "help floor",
        "--version",
    ] {
        match parse(line) {
            Ok(Command::Help(text)) => assert!(!text.is_empty(), "{line:?}"),
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }
    let Ok(Command::Help(get)) = parse("get --help") else {
        panic!("get --help")
    };
    for flag in [
        "--consistency",
        "--prefill",
        "--watch-mode",
        "--watch-endpoint",
        "--duration",
    ] {
        assert!(get.contains(flag), "{flag} not in get --help");
    }
}

#[test]
fn bad_command_lines() {
    for (line, words) in [
        ("", &["Usage"][..]),
        ("delete", &["delete"][..]),
        ("put", &["--endpoints"][..]),
        ("floor --count 3", &["--dir"][..]),
        ("put --endpoints", &["--endpoints"][..]),
        ("put --endpoints x:1 stray", &["stray"][..]),
        ("get --endpoints x:1 --prefill=yes", &["--prefill"][..]),
        ("put --endpoints x:1 --consistency s", &["--consistency"][..]),
        ("txn --endpoints x:1 --prefill", &["--prefill"][..]),
        ("put --endpoints x:1 --clientz 3", &["--clientz"][..]),
        ("floor --dir d --clients 3", &["--clients"][..]),
    ] {
        refused_naming(line, words);
    }
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    for (line, flag, value) in [
        ("put --endpoints x:1 --clients 0", "--clients", "0"),
        ("put --endpoints x:1 --clients many", "--clients", "many"),
        ("put --endpoints x:1 --conns -1", "--conns", "-1"),
        ("put --endpoints x:1 --duration 30", "--duration", "30"),
        ("put --endpoints x:1 --duration 10x", "--duration", "10x"),
        ("put --endpoints x:1 --total 0", "--total", "0"),
        ("put --endpoints x:1 --key-space 0", "--key-space", "0"),
        ("put --endpoints a:1,,b:2", "--endpoints", "a:1,,b:2"),
        (
            "get --endpoints x:1 --consistency strong",
            "--consistency",
            "strong",
        ),
        ("floor --dir d --count 0", "--count", "0"),
    ] {
        refused_naming(line, &[flag, value]);
    }
    refused_naming("put --endpoints x:1 --clients 0", &["at least 1"]);
    refused_naming("get --endpoints x:1 --consistency strong", &["expected l or s"]);
}

#[test]
fn watch_flags_default_to_none() {
    let config = load("put --endpoints a:1,b:2");
    assert_eq!(config.watchers, 0);
    assert_eq!(config.watch_mode, WatchMode::Idle);
    assert_eq!(config.watch_endpoint, None);
    assert_eq!(config.watch_endpoint(), Some("http://a:1"));
}

#[test]
fn watch_flags() {
    let config = load("put --endpoints a:1,b:2 --watchers 1000");
    assert_eq!((config.watchers, config.watch_mode), (1000, WatchMode::Idle));
    assert_eq!(config.watch_endpoint(), Some("http://a:1"));
    let config = load("txn --endpoints a:1,b:2 --watchers=100 --watch-mode written --watch-endpoint b:2");
    assert_eq!((config.watchers, config.watch_mode), (100, WatchMode::Written));
    assert_eq!(config.watch_endpoint.as_deref(), Some("http://b:2"));
    assert_eq!(config.watch_endpoint(), Some("http://b:2"));
    let config = load("get --endpoints a:1 --watch-mode=idle --watchers 1 --prefill");
    assert_eq!((config.watchers, config.watch_mode), (1, WatchMode::Idle));
    // The watch endpoint need not be one of the load's.
    let config = load("put --endpoints a:1 --watchers 5 --watch-endpoint https://c:3");
    assert_eq!(config.watch_endpoint(), Some("https://c:3"));
    // An explicit zero is no watchers.
    assert_eq!(load("put --endpoints a:1 --watchers 0").watchers, 0);
    assert_eq!(WatchMode::Written.name(), "written");
}

#[test]
fn bad_watch_flags() {
    for (line, flag, value) in [
        (
            "put --endpoints x:1 --watchers 10 --watch-mode busy",
            "--watch-mode",
            "busy",
        ),
        (
            "put --endpoints x:1 --watchers 10 --watch-mode Idle",
            "--watch-mode",
            "Idle",
        ),
        ("put --endpoints x:1 --watchers -1", "--watchers", "-1"),
        ("put --endpoints x:1 --watchers lots", "--watchers", "lots"),
        ("put --endpoints x:1 --watchers 1000001", "--watchers", "1000001"),
        (
            "put --endpoints x:1 --watchers 1 --watch-endpoint a:1,b:2",
            "--watch-endpoint",
            "a:1,b:2",
        ),
        (
            "put --endpoints x:1 --watchers 1 --watch-endpoint=",
            "--watch-endpoint",
            "",
        ),
        ("put --endpoints x:1 --watchers", "--watchers", ""),
    ] {
        refused_naming(line, &[flag, value]);
    }
    refused_naming(
        "put --endpoints x:1 --watchers 5 --watch-mode busy",
        &["idle", "written"],
    );
    refused_naming("put --endpoints x:1 --watchers 1000001", &["at most 1000000"]);
}

#[test]
fn watch_flags_need_watchers_and_a_load_workload() {
    for (line, flag) in [
        ("put --endpoints x:1 --watch-mode written", "--watch-mode"),
        ("get --endpoints x:1 --watch-endpoint y:2", "--watch-endpoint"),
        (
            "txn --endpoints x:1 --watchers 0 --watch-mode idle",
            "--watch-mode",
        ),
    ] {
        match parse(line) {
            Err(CliError::Misplaced { flag: named, .. }) => assert_eq!(named, flag, "{line:?}"),
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }
    assert_eq!(
        refused("put --endpoints x:1 --watch-mode written"),
        "flag --watch-mode needs --watchers N with N > 0"
    );
    for line in [
        "floor --dir d --watchers 10",
        "floor --dir d --watch-mode idle",
        "floor --watch-endpoint x:1 --dir d",
    ] {
        refused_naming(line, &["--watch"]);
    }
}
