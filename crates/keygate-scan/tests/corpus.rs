//! A labelled corpus the test builds: keys in realistic code, configs and packages, and
//! hard negatives (UUIDs, hashes, lockfile integrity strings, base64 images, test
//! fixtures and placeholders). Prints precision and recall; fails below the floors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::io::{Cursor, Write};

use common::Gen;
use keygate_scan::formats::{axml, dex};
use keygate_scan::matcher::Matcher;
use keygate_scan::rules::RuleSet;
use keygate_scan::scan::{Collector, Limits, Origin, Scanner};

struct Sample {
    path: String,
    data: Vec<u8>,
    /// Rule ids expected in this file (empty for a negative).
    expect: Vec<&'static str>,
}

fn pos(path: &str, text: String, expect: &[&'static str]) -> Sample {
    Sample {
        path: path.to_string(),
        data: text.into_bytes(),
        expect: expect.to_vec(),
    }
}

fn neg(path: &str, text: String) -> Sample {
    Sample {
        path: path.to_string(),
        data: text.into_bytes(),
        expect: Vec::new(),
    }
}

fn positives(g: &mut Gen, i: usize) -> Vec<Sample> {
    let b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits = "0123456789";
    let pem: String = (0..6).map(|_| format!("{}\n", g.from(b64, 64))).collect();
    vec![
        pos(
            &format!("android/app/src/main/java/com/acme/Maps{i}.kt"),
            format!(
                "package com.acme\n\nobject MapsConfig {{\n    private const val MAPS_KEY = \"{}\"\n}}\n",
                g.google()
            ),
            &["google-api-key"],
        ),
        pos(
            &format!("ios/Acme/Payments{i}.swift"),
            format!(
                "import Stripe\n\nlet stripeKey = \"{}\"\nStripeAPI.defaultPublishableKey = stripeKey\n",
                g.stripe()
            ),
            &["stripe-secret-key"],
        ),
        pos(
            &format!("web/src/ai{i}.ts"),
            format!(
                "import OpenAI from 'openai';\nconst client = new OpenAI({{ apiKey: \"{}\" }});\n",
                g.openai()
            ),
            &["openai-api-key"],
        ),
        pos(
            &format!("deploy/.env.{i}"),
            format!(
                "AWS_REGION=eu-west-1\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
                g.aws(),
                g.from(b64, 40)
            ),
            &["aws-access-key-id", "aws-secret-access-key"],
        ),
        pos(
            &format!(".github/workflows/release{i}.yml"),
            format!(
                "jobs:\n  release:\n    env:\n      GITHUB_TOKEN: {}\n    steps:\n      - run: make\n",
                g.github()
            ),
            &["github-pat-token"],
        ),
        pos(
            &format!("android/gradle{i}.properties"),
            format!(
                "org.gradle.jvmargs=-Xmx2g\nslackWebhook=https://hooks.slack.com/services/T{}/B{}/{}\n",
                g.upper32(10),
                g.upper32(10),
                g.alnum(24)
            ),
            &["slack-webhook-url"],
        ),
        pos(
            &format!("server/twilio{i}.py"),
            format!(
                "from twilio.rest import Client\nTWILIO_AUTH_TOKEN = \"{}\"\nclient = Client(sid, TWILIO_AUTH_TOKEN)\n",
                g.hex(32)
            ),
            &["twilio-auth-token"],
        ),
        pos(
            &format!("android/app/src/main/res/values/secrets{i}.xml"),
            format!(
                "<resources>\n    <string name=\"app_name\">Acme</string>\n    <string name=\"api_secret\">{}</string>\n</resources>\n",
                g.alnum(32)
            ),
            &["generic-secret-assignment"],
        ),
        pos(
            &format!("backend/src/Db{i}.java"),
            format!(
                "class Db {{\n  static final String DB_PASSWORD = \"{}!{}\";\n}}\n",
                g.alnum(14),
                g.alnum(4)
            ),
            &["generic-secret-assignment"],
        ),
        pos(
            &format!("docker-compose{i}.yml"),
            format!(
                "services:\n  api:\n    environment:\n      DATABASE_URL: postgres://app:{}@db:5432/app\n",
                g.alnum(20)
            ),
            &["connection-string-password"],
        ),
        pos(
            &format!("certs/server{i}.key"),
            format!("-----BEGIN RSA PRIVATE KEY-----\n{pem}-----END RSA PRIVATE KEY-----\n"),
            &["private-key"],
        ),
        pos(
            &format!("api-tests/session{i}.http"),
            format!(
                "GET https://api.acme.test/me\nAuthorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}\n",
                g.urlsafe(90),
                g.urlsafe(86)
            ),
            &["jwt"],
        ),
        pos(
            &format!("frontend/.npmrc{i}"),
            format!("//registry.npmjs.org/:_authToken=npm_{}\n", g.alnum(36)),
            &["npm-access-token"],
        ),
        pos(
            &format!("infra/main{i}.tf"),
            format!(
                "provider \"tfe\" {{\n  token = \"{}.atlasv1.{}\"\n}}\n",
                g.alnum(14),
                g.urlsafe(67)
            ),
            &["terraform-cloud-token"],
        ),
        pos(
            &format!("mailer/Send{i}.php"),
            format!(
                "<?php\n$sg = new \\SendGrid('SG.{}.{}');\n",
                g.urlsafe(22),
                g.urlsafe(43)
            ),
            &["sendgrid-api-key"],
        ),
        pos(
            &format!("bot/main{i}.go"),
            format!(
                "package main\n\nconst botToken = \"{}:AA{}\"\n",
                g.from(digits, 10),
                g.urlsafe(33)
            ),
            &["telegram-bot-token"],
        ),
        pos(
            &format!("notebooks/train{i}.py"),
            format!(
                "from huggingface_hub import login\nlogin(token=\"hf_{}\")\n",
                g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 34)
            ),
            &["huggingface-token"],
        ),
        pos(
            &format!("agent/claude{i}.rb"),
            format!(
                "client = Anthropic::Client.new(api_key: \"sk-ant-api03-{}AA\")\n",
                g.urlsafe(93)
            ),
            &["anthropic-api-key"],
        ),
        pos(
            &format!("functions/push{i}.js"),
            format!(
                "const FCM_KEY = 'AAAA{}:APA91b{}';\n",
                g.urlsafe(7),
                g.urlsafe(134)
            ),
            &["firebase-cloud-messaging-server-key"],
        ),
        pos(
            &format!("backend/appsettings{i}.json"),
            format!(
                "{{\n  \"Storage\": \"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={}==;EndpointSuffix=core.windows.net\"\n}}\n",
                g.from(b64, 86)
            ),
            &["azure-storage-account-key"],
        ),
        pos(
            &format!("ops/alerts{i}.sh"),
            format!(
                "curl -X POST https://discord.com/api/webhooks/{}/{} -d @msg.json\n",
                g.from(digits, 18),
                g.urlsafe(68)
            ),
            &["discord-webhook-url"],
        ),
        pos(
            &format!("ios/Acme/GitLab{i}.swift"),
            format!("let token = \"glpat-{}\"\n", g.urlsafe(20)),
            &["gitlab-pat"],
        ),
        pos(
            &format!("scripts/dd{i}.sh"),
            format!("export DD_API_KEY={}\n", g.hex(32)),
            &["datadog-api-key"],
        ),
        pos(
            &format!("android/app/src/main/assets/shopify{i}.json"),
            format!("{{\"shopifyToken\":\"shpat_{}\"}}\n", g.hex(32)),
            &["shopify-access-token"],
        ),
        pos(
            &format!("ios/Acme/Keys{i}.plist"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n\t<key>TwilioAuthToken</key>\n\t<string>{}</string>\n</dict>\n</plist>\n",
                g.hex(32)
            ),
            &["twilio-auth-token"],
        ),
        pos(
            &format!("rn/src/config{i}.js"),
            format!(
                "export default {{\n  mapbox: 'sk.eyJ1IjoiYWNtZSIsImEiOiJ{}.{}',\n}};\n",
                g.urlsafe(20),
                g.urlsafe(22)
            ),
            &["mapbox-secret-token"],
        ),
    ]
}

fn negatives(g: &mut Gen, i: usize) -> Vec<Sample> {
    let b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        g.hex(8),
        g.hex(4),
        g.hex(3),
        g.hex(3),
        g.hex(12)
    );
    vec![
        neg(&format!("src/session{i}.ts"), format!("const sessionId = \"{uuid}\";\nconst requestId: string = uuid();\n")),
        neg(&format!("Cargo{i}.lock"), format!("[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\nchecksum = \"{}\"\n", g.hex(64))),
        neg(&format!("package-lock{i}.json"),
            format!("{{\"node_modules/react\": {{\"version\": \"18.2.0\", \"resolved\": \"https://registry.example/react.tgz\", \"integrity\": \"sha512-{}==\"}}}}\n", g.from(b64, 86))),
        neg(&format!("yarn{i}.lock"), format!("react@^18:\n  version \"18.2.0\"\n  integrity sha512-{}==\n", g.from(b64, 86))),
        neg(&format!("go{i}.sum"), format!("golang.org/x/net v0.17.0 h1:{}=\n", g.from(b64, 43))),
        neg(&format!("web/logo{i}.css"), format!(".logo {{ background: url(data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA{}); }}\n", g.from(b64, 400))),
        neg(&format!("docs/setup{i}.md"),
            "Set `API_KEY = \"YOUR_API_KEY_HERE\"` and `password = \"changeme\"`.\nAWS example: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n".to_string()),
        neg(&format!("test/fixtures/stripe{i}.rb"), "STRIPE_KEY = 'sk_live_xxxxxxxxxxxxxxxxxxxxxxxx'\n".to_string()),
        neg(&format!("src/env{i}.js"), "const key = process.env.OPENAI_API_KEY;\nconst token = `${GITHUB_TOKEN}`;\n".to_string()),
        neg(&format!("ios/Acme/Public{i}.swift"),
            format!("let publishable = \"pk_live_{}\"\nlet mapbox = \"pk.eyJ1IjoiYWNtZSJ9.{}\"\n", g.alnum(24), g.urlsafe(22))),
        neg(&format!("src/git{i}.txt"), format!("commit {}\nAuthor: Dev <dev@acme.test>\nMerge: {} {}\n", g.hex(40), g.hex(7), g.hex(7))),
        neg(&format!("web/cache{i}.js"), format!("const cache_key = \"{}\";\nconst etag = \"{}\";\n", g.hex(32), g.hex(40))),
        neg(&format!("config/i18n{i}.json"), "{\"forgot_password\": \"Forgot your password?\", \"password_hint\": \"At least 8 characters\"}\n".to_string()),
        neg(&format!("src/forms{i}.py"), "password_field = \"password_confirmation\"\nTOKEN_HEADER = \"X-Auth-Token\"\n".to_string()),
        neg(&format!("android/google-services{i}.json"), format!("{{\"mobilesdk_app_id\": \"1:{}:android:{}\", \"project_number\": \"{}\"}}\n", g.from("0123456789", 12), g.hex(16), g.from("0123456789", 12))),
        neg(&format!("src/crypto{i}.rs"), format!("const PUBLIC_KEY: &str = \"{}\";\nlet nonce = \"{}\";\n", g.from(b64, 44), g.alnum(24))),
        neg(&format!("src/colors{i}.kt"), "val primary = Color(0xFF6200EE)\nval accent = \"#03DAC5\"\n".to_string()),
        neg(&format!("src/Rails{i}.yml"), "production:\n  secret_key_base: <%= ENV[\"SECRET_KEY_BASE\"] %>\n".to_string()),
    ]
}

fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn packages(g: &mut Gen, i: usize) -> Vec<Sample> {
    let stripe = g.stripe();
    let google = g.google();
    let apk = zip_of(&[
        (
            "AndroidManifest.xml",
            axml::build::binary_xml(&[(
                "meta-data",
                &[
                    ("name", "com.google.android.geo.API_KEY"),
                    ("value", google.as_str()),
                ],
            )]),
        ),
        (
            "classes.dex",
            dex::build_for_tests(&["Lcom/acme/A;", "onCreate", &stripe]),
        ),
        (
            "resources.arsc",
            axml::build::resource_table(&[
                ("app_name", "Acme"),
                ("build_uuid", "3f2b9c1e-0d4a-4e8b-9a77-1c2d3e4f5a6b"),
            ]),
        ),
    ]);
    let clean = zip_of(&[
        (
            "classes.dex",
            dex::build_for_tests(&[
                "Lcom/acme/B;",
                "Ljava/lang/String;",
                "https://api.acme.test",
            ]),
        ),
        (
            "assets/licenses.txt",
            b"MIT License\nCopyright (c) Acme\n".to_vec(),
        ),
    ]);
    vec![
        Sample {
            path: format!("build/app{i}.apk"),
            data: apk,
            expect: vec!["google-api-key", "stripe-secret-key"],
        },
        Sample {
            path: format!("build/clean{i}.apk"),
            data: clean,
            expect: Vec::new(),
        },
    ]
}

#[test]
fn labelled_corpus_precision_and_recall() {
    let scanner = Scanner::new(
        Matcher::new(RuleSet::builtin().unwrap()).unwrap(),
        None,
        Limits::default(),
    );
    let mut g = Gen::new(2026);
    let mut samples = Vec::new();
    for i in 0..4 {
        samples.extend(positives(&mut g, i));
        samples.extend(negatives(&mut g, i));
        samples.extend(packages(&mut g, i));
    }
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    let mut false_alarms = Vec::new();
    for s in &samples {
        let sink = Collector::default();
        scanner.scan_bytes(&s.data, &Origin::new(s.path.as_str()), &sink);
        let (findings, _) = sink.finish();
        let got: BTreeSet<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
        let want: BTreeSet<&str> = s.expect.iter().copied().collect();
        tp += want.intersection(&got).count();
        for m in want.difference(&got) {
            fneg += 1;
            misses.push(format!("{}: {m}", s.path));
        }
        for x in got.difference(&want) {
            fp += 1;
            false_alarms.push(format!("{}: {x}", s.path));
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fneg).max(1) as f64;
    println!(
        "corpus: {} files, {} expected keys; tp={tp} fp={fp} fn={fneg}; precision={precision:.3} recall={recall:.3}",
        samples.len(),
        tp + fneg
    );
    println!("missed: {misses:#?}\nfalse alarms: {false_alarms:#?}");
    assert!(tp + fneg >= 100, "corpus too small");
    assert!(recall >= 0.97, "recall {recall:.3}: {misses:#?}");
    assert!(
        precision >= 0.97,
        "precision {precision:.3}: {false_alarms:#?}"
    );
}
