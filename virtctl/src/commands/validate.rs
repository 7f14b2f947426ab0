//! `virtctl validate -f FILE…`: parse, default and validate KubeVirt objects without a cluster.
//!
//! Uses exactly the code virtshim's admission webhooks use, so what passes here is admitted
//! there. Valid objects go to stdout (defaulted, with `-o yaml|json`); every error, with its
//! field path, goes to stderr; the exit status is 1 when anything is invalid.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use virtshim_api::manifest::{parse_documents, Object};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders of YAML/JSON manifests; `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Print the defaulted objects.
    #[arg(short = 'o', long = "output", value_parser = ["yaml", "json"])]
    output: Option<String>,
}

/// One input: a name for messages and its text.
struct Source {
    name: String,
    text: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut valid = Vec::new();
    let mut invalid = 0usize;
    for source in read_sources(&args.files)? {
        for (i, document) in parse_documents(&source.text).into_iter().enumerate() {
            match document {
                Err(e) => {
                    invalid += 1;
                    eprintln!("{}: document {}: {e}", source.name, i + 1);
                }
                Ok(mut object) => {
                    object.apply_defaults();
                    match object.validate() {
                        Ok(()) => valid.push(object),
                        Err(errors) => {
                            invalid += 1;
                            eprintln!(
                                "{}: {} {:?} is invalid:",
                                source.name,
                                object.kind(),
                                object.name()
                            );
                            for error in errors.iter() {
                                eprintln!("  {error}");
                            }
                        }
                    }
                }
            }
        }
    }
    print_valid(&valid, args.output.as_deref())?;
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_valid(objects: &[Object], output: Option<&str>) -> Result<()> {
    match output {
        None => {
            for object in objects {
                println!(
                    "{}.kubevirt.io/{} is valid",
                    object.kind().to_lowercase(),
                    object.name()
                );
            }
        }
        Some("yaml") => {
            for (i, object) in objects.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", serde_yaml_ng::to_string(&object.to_value())?);
            }
        }
        Some(_) => {
            let value = match objects {
                [one] => one.to_value(),
                many => serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": many.iter().map(Object::to_value).collect::<Vec<_>>(),
                }),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

fn read_sources(names: &[String]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for name in names {
        if name == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            out.push(Source {
                name: "<stdin>".to_owned(),
                text,
            });
            continue;
        }
        let path = Path::new(name);
        let files = if path.is_dir() {
            manifest_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            out.push(Source {
                name: file.display().to_string(),
                text,
            });
        }
    }
    Ok(out)
}

/// The `.yaml`, `.yml` and `.json` files of a folder, sorted, as `kubectl apply -f DIR` reads them.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .yaml, .yml or .json files in {}", dir.display());
    }
    Ok(files)
}
