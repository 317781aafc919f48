//! `convnet`: train, evaluate, predict and inspect convolutional networks from
//! the terminal. Every user mistake ends in one line on stderr and a non-zero
//! exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug in convnet, never the user's fault; still, say it in one line.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        if message.contains("failed printing to stdout") {
            // the reader went away (`convnet ... | head`): stop quietly, as Unix tools do
            std::process::exit(141);
        }
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{location}: {message} (please report this)");
    }));
    match convnet_app::cli::run() {
        Ok(code) => code,
        Err(error) => {
            // anyhow's alternate format joins the context chain with ": " on one line
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
