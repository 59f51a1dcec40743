//! `raftkv-bench`: parses the command line, runs the chosen workload (with its watchers,
//! if any) or the floor, and prints the report. All the work is in the library; see its crate docs.

use std::process::ExitCode;
use std::sync::Arc;

use raftkv_bench::progress::Progress;
use raftkv_bench::watchers::WatchSet;
use raftkv_bench::{Command, FloorConfig, LiveCounters, LoadConfig, Report, Workload};
use raftkv_bench::{cli, floor, report, workload};

fn main() -> ExitCode {
    let command = match cli::parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(cli::CliError::Parse(rendered)) => {
            // clap's own text: "error: ...", the usage line and where help is.
            eprintln!("{rendered}");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("error: {error}\n\nRun `raftkv-bench --help` for usage.");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Load(config) => runtime.block_on(load(config)),
        Command::Floor(config) => runtime.block_on(measure_floor(config)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn load(config: LoadConfig) -> raftkv_bench::Result<()> {
    let conns = workload::connect(&config).await?;
    if let Workload::Get { prefill: true, .. } = config.workload {
        eprintln!("prefill: writing {} keys", config.key_space);
        let prefill = workload::prefill(&config, &conns).await?;
        eprintln!(
            "prefill: {} keys in {:.1} s, {} errors",
            prefill.keys,
            prefill.elapsed.as_secs_f64(),
            prefill.errors
        );
        for sample in &prefill.error_samples {
            eprintln!("  {sample}");
        }
    }
    let mut watchers = WatchSet::open(&config).await?;
    if let Some(watchers) = &mut watchers {
        let opened = watchers.result();
        eprintln!(
            "watch: {} of {} {} watchers created on {} in {:.1} s, {} errors",
            opened.created,
            opened.watchers,
            opened.mode.name(),
            opened.endpoint,
            watchers.setup_time().as_secs_f64(),
            opened.errors
        );
        watchers.start_measuring();
    }
    let live = Arc::new(LiveCounters::default());
    let progress = Progress::start(live.clone(), config.duration, config.total);
    let measured = workload::measure(&config, &conns, &live).await;
    progress.finish().await;
    let watch = match watchers {
        Some(watchers) => Some(watchers.close().await),
        None => None,
    };
    let mut result = measured?;
    result.watch = watch;
    let report = Report::new(&result);
    print!("{}", report.to_text());
    if let Some(path) = &config.json {
        report::write_file(path, &report.to_json())?;
    }
    Ok(())
}

async fn measure_floor(config: FloorConfig) -> raftkv_bench::Result<()> {
    let result = floor::run(&config).await?;
    print!("{}", result.to_text());
    if let Some(path) = &config.json {
        report::write_file(path, &result.to_json())?;
    }
    Ok(())
}
