//! Asking the user, once, whether to trust a certificate nothing vouches
//! for.

use super::*;

/// Asks whether to trust `host_port`'s certificate with fingerprint `fp`.
/// Only `y` or `yes` (any case) is a yes; an empty line or end of input is
/// a no.
pub fn ask_to_trust(
    host_port: &str,
    fp: &str,
    mut input: impl BufRead,
    mut output: impl Write,
) -> io::Result<bool> {
    write!(
        output,
        "The authenticity of {host_port} can't be established.\n\
         SHA-256 fingerprint: {fp}\n\
         Compare it with the fingerprint the server's operator gives you.\n\
         Trust it and remember? [y/N] "
    )?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}
