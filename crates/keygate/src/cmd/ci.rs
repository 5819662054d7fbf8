//! `keygate ci example --provider github|gitlab`: a pipeline that logs in with the job's
//! OIDC token and runs a step with secrets from keygate, and the server configuration
//! that trusts it.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Github,
    Gitlab,
}

#[derive(Subcommand)]
pub enum CiCommand {
    /// Print a pipeline using OIDC and `keygate run`, and the `[[ci.issuers]]` it needs
    #[command(
        after_help = "Example:\n  keygate ci example --provider github > .github/workflows/deploy.yml"
    )]
    Example {
        #[arg(long, value_enum)]
        provider: Provider,
        /// keygate's public URL, as the pipeline reaches it (also the token audience)
        #[arg(long, default_value = "https://keygate.example.com")]
        url: String,
        /// The repository the binding admits (owner/name for GitHub, group/project for GitLab)
        #[arg(long, default_value = "acme/app")]
        repository: String,
    },
}

pub fn github(url: &str, repository: &str) -> String {
    format!(
        r#"# .github/workflows/deploy.yml: deploy with secrets from keygate, no stored credential.
# The job asks GitHub for an OIDC ID token (audience: keygate's URL), keygate checks it
# against the [[ci.issuers]] binding below and answers with a machine token of minutes
# that reads only what policy `deploy` grants. Values reach the step's environment only,
# and are printed as **** if the step echoes them.
#
# keygate.toml on the server:
#
#   [[ci.issuers]]
#   name       = "github"
#   issuer     = "https://token.actions.githubusercontent.com"
#   audience   = "{url}"
#   jwks_url   = "https://token.actions.githubusercontent.com/.well-known/jwks"
#   algorithms = ["RS256"]
#
#   [[ci.issuers.bindings]]
#   policy = "deploy"
#   claims = {{ repository = "{repository}", ref = "refs/heads/main", environment = "production" }}
#
# and once, as an admin:  keygate policy put deploy --secret 'deploy.*' --ttl 10m
name: deploy
on:
  push:
    branches: [main]
permissions:
  id-token: write   # lets the job request its OIDC token
  contents: read
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    env:
      KEYGATE_ADDR: {url}
      KEYGATE_AUDIENCE: {url}
    steps:
      - uses: actions/checkout@v4
      - name: Install keygate
        run: cargo install --locked keygate
      - name: Deploy
        run: keygate run --secret STRIPE_KEY=deploy.stripe --secret MAPS_KEY=deploy.maps -- ./scripts/deploy.sh
"#
    )
}

pub fn gitlab(url: &str, repository: &str) -> String {
    format!(
        r#"# .gitlab-ci.yml: deploy with secrets from keygate, no stored credential.
# GitLab puts the job's OIDC ID token in KEYGATE_ID_TOKEN (id_tokens below); keygate
# checks it against the [[ci.issuers]] binding and answers with a machine token of
# minutes that reads only what policy `deploy` grants.
#
# keygate.toml on the server:
#
#   [[ci.issuers]]
#   name       = "gitlab"
#   issuer     = "https://gitlab.com"
#   audience   = "{url}"
#   jwks_url   = "https://gitlab.com/oauth/discovery/keys"
#   algorithms = ["RS256"]
#
#   [[ci.issuers.bindings]]
#   policy = "deploy"
#   claims = {{ project_path = "{repository}", ref = "main", ref_protected = "true" }}
#
# and once, as an admin:  keygate policy put deploy --secret 'deploy.*' --ttl 10m
deploy:
  stage: deploy
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
  id_tokens:
    KEYGATE_ID_TOKEN:
      aud: {url}
  variables:
    KEYGATE_ADDR: {url}
  script:
    - keygate run --secret STRIPE_KEY=deploy.stripe --secret MAPS_KEY=deploy.maps -- ./scripts/deploy.sh
"#
    )
}

pub fn run(cmd: CiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CiCommand::Example {
            provider,
            url,
            repository,
        } => {
            let text = match provider {
                Provider::Github => github(&url, &repository),
                Provider::Gitlab => gitlab(&url, &repository),
            };
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
