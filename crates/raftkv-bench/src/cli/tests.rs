//! Unit tests of the command line: good and bad inputs.

use super::*;

fn parse(line: &str) -> Result<Command, CliError> {
    parse_args(line.split_whitespace())
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
}

#[test]
fn bad_durations_are_refused() {
    for text in [
        "",
        "30",
        "s",
        "0s",
        "1.5s",
        "-1s",
        "10x",
        "5 s",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?} was accepted");
    }
    assert!(parse_duration("30").unwrap_err().contains("missing unit"));
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
fn conns_are_capped_at_clients() {
    assert_eq!(load("put --endpoints x:1 --clients 2").conns, 2);
}

#[test]
fn floor_flags() {
    assert_eq!(
        parse("floor --dir /tmp/x --count 10 --json f.json"),
        Ok(Command::Floor(FloorConfig {
            dir: PathBuf::from("/tmp/x"),
            count: 10,
            json: Some(PathBuf::from("f.json")),
        }))
    );
    assert_eq!(
        parse("floor --dir d"),
        Ok(Command::Floor(FloorConfig {
            dir: PathBuf::from("d"),
            count: 2000,
            json: None,
        }))
    );
}

#[test]
fn help() {
    assert_eq!(parse("--help"), Ok(Command::Help));
    assert_eq!(parse("put --clients 3 -h"), Ok(Command::Help));
    assert!(USAGE.contains("--consistency"));
}

#[test]
fn bad_command_lines() {
    let cases: &[(&str, CliError)] = &[
        ("", CliError::MissingCommand),
        ("delete", CliError::UnknownCommand("delete".into())),
        ("put", CliError::MissingFlag("--endpoints")),
        ("floor --count 3", CliError::MissingFlag("--dir")),
        ("put --endpoints", CliError::MissingValue("--endpoints".into())),
        (
            "put --endpoints x:1 stray",
            CliError::UnexpectedArgument("stray".into()),
        ),
        (
            "get --endpoints x:1 --prefill=yes",
            CliError::UnexpectedValue("--prefill".into()),
        ),
        (
            "put --endpoints x:1 --consistency s",
            CliError::UnknownFlag {
                command: "put".into(),
                flag: "--consistency".into(),
            },
        ),
        (
            "txn --endpoints x:1 --prefill",
            CliError::UnknownFlag {
                command: "txn".into(),
                flag: "--prefill".into(),
            },
        ),
        (
            "put --endpoints x:1 --clientz 3",
            CliError::UnknownFlag {
                command: "put".into(),
                flag: "--clientz".into(),
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line).as_ref(), Err(expected), "{line:?}");
    }
}

#[test]
fn bad_values_name_the_flag() {
    for (line, flag) in [
        ("put --endpoints x:1 --clients 0", "--clients"),
        ("put --endpoints x:1 --clients many", "--clients"),
        ("put --endpoints x:1 --conns -1", "--conns"),
        ("put --endpoints x:1 --duration 30", "--duration"),
        ("put --endpoints x:1 --total 0", "--total"),
        ("put --endpoints x:1 --key-space 0", "--key-space"),
        ("put --endpoints a:1,,b:2", "--endpoints"),
        ("get --endpoints x:1 --consistency strong", "--consistency"),
        ("floor --dir d --count 0", "--count"),
    ] {
        match parse(line) {
            Err(CliError::InvalidValue { flag: named, .. }) => assert_eq!(named, flag, "{line:?}"),
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }
    let message = parse("put --endpoints x:1 --duration 10x")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("--duration") && message.contains("10x"),
        "{message}"
    );
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
    assert!(USAGE.contains("--watch-mode") && USAGE.contains("--watch-endpoint"));
}

#[test]
fn bad_watch_flags() {
    for (line, flag) in [
        (
            "put --endpoints x:1 --watchers 10 --watch-mode busy",
            "--watch-mode",
        ),
        (
            "put --endpoints x:1 --watchers 10 --watch-mode Idle",
            "--watch-mode",
        ),
        ("put --endpoints x:1 --watchers -1", "--watchers"),
        ("put --endpoints x:1 --watchers lots", "--watchers"),
        ("put --endpoints x:1 --watchers 1000001", "--watchers"),
        (
            "put --endpoints x:1 --watchers 1 --watch-endpoint a:1,b:2",
            "--watch-endpoint",
        ),
        (
            "put --endpoints x:1 --watchers 1 --watch-endpoint=",
            "--watch-endpoint",
        ),
    ] {
        match parse(line) {
            Err(CliError::InvalidValue { flag: named, .. }) => assert_eq!(named, flag, "{line:?}"),
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }
    let message = parse("put --endpoints x:1 --watchers 5 --watch-mode busy")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("busy") && message.contains("idle or written"),
        "{message}"
    );
    assert_eq!(
        parse("put --endpoints x:1 --watchers"),
        Err(CliError::MissingValue("--watchers".into()))
    );
}

#[test]
fn watch_flags_need_watchers_and_a_load_workload() {
    let needs_watchers = |flag: &str| CliError::Misplaced {
        flag: flag.into(),
        reason: "needs --watchers N with N > 0",
    };
    let cases: &[(&str, CliError)] = &[
        (
            "put --endpoints x:1 --watch-mode written",
            needs_watchers("--watch-mode"),
        ),
        (
            "get --endpoints x:1 --watch-endpoint y:2",
            needs_watchers("--watch-endpoint"),
        ),
        (
            "txn --endpoints x:1 --watchers 0 --watch-mode idle",
            needs_watchers("--watch-mode"),
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line).as_ref(), Err(expected), "{line:?}");
    }
    for line in [
        "floor --dir d --watchers 10",
        "floor --dir d --watch-mode idle",
        "floor --watch-endpoint x:1 --dir d",
    ] {
        match parse(line) {
            Err(error @ CliError::Misplaced { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains("--watch") && message.contains("not floor"),
                    "{message}"
                );
            }
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }
    let message = parse("put --endpoints x:1 --watch-mode written")
        .unwrap_err()
        .to_string();
    assert_eq!(message, "flag --watch-mode needs --watchers N with N > 0");
}
