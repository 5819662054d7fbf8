"""Reads sslyze's JSON (and its text, for the Mozilla compliance lines) and fails on any
finding rated medium or worse:

- a protocol below TLS 1.2 accepted (SSL 2/3, TLS 1.0/1.1), or TLS 1.2/1.3 missing;
- a TLS 1.2 suite without forward secrecy or without AEAD (RSA key exchange, CBC, RC4, 3DES);
- Heartbleed, CCS injection, ROBOT, insecure or client-initiated renegotiation,
  compression (CRIME), no TLS_FALLBACK_SCSV;
- the certificate not validating against the CA it was issued by;
- no Strict-Transport-Security header;
- any point of Mozilla's "intermediate" configuration not met, except validation against
  the public trust stores, which a certificate made by a throw-away CA cannot pass (the
  same check against that CA is made above).

Prints what it checked; exits 1 with the findings, 0 without.
"""
import json
import sys


def main(json_path: str, text_path: str) -> int:
    doc = json.load(open(json_path))
    server = doc["server_scan_results"][0]
    if server["scan_status"] != "COMPLETED":
        print(f"tls scan: sslyze could not scan: {server.get('connectivity_error_trace')}")
        return 1
    r = server["scan_result"]
    findings = []
    checked = []

    def result(name):
        entry = r.get(name) or {}
        if entry.get("status") != "COMPLETED":
            findings.append(f"{name}: scan did not complete ({entry.get('error_reason')})")
            return {}
        return entry["result"]

    def accepted(name):
        return [c["cipher_suite"]["name"] for c in result(name).get("accepted_cipher_suites", [])]

    for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"]:
        suites = accepted(f"{old}_cipher_suites")
        if suites:
            findings.append(f"{old} accepted: {', '.join(suites)}")
    tls12, tls13 = accepted("tls_1_2_cipher_suites"), accepted("tls_1_3_cipher_suites")
    if not tls12 or not tls13:
        findings.append("TLS 1.2 and TLS 1.3 must both be offered")
    for s in tls12:
        weak = not s.startswith("TLS_ECDHE_") or not ("GCM" in s or "CHACHA20" in s)
        if weak:
            findings.append(f"weak TLS 1.2 suite: {s}")
    checked.append(f"protocols: TLS 1.2 ({len(tls12)} suites), TLS 1.3 ({len(tls13)} suites)")

    if result("heartbleed").get("is_vulnerable_to_heartbleed"):
        findings.append("vulnerable to Heartbleed")
    if result("openssl_ccs_injection").get("is_vulnerable_to_ccs_injection"):
        findings.append("vulnerable to CCS injection")
    robot = result("robot").get("robot_result", "")
    if not robot.startswith("NOT_VULNERABLE"):
        findings.append(f"ROBOT: {robot}")
    reneg = result("session_renegotiation")
    if reneg.get("is_vulnerable_to_client_renegotiation_dos") or not reneg.get("supports_secure_renegotiation", True):
        findings.append("insecure or client-initiated renegotiation")
    if result("tls_compression").get("supports_compression"):
        findings.append("TLS compression (CRIME)")
    if not result("tls_fallback_scsv").get("supports_fallback_scsv"):
        findings.append("no TLS_FALLBACK_SCSV")
    checked.append("Heartbleed, CCS injection, ROBOT, renegotiation, compression, fallback SCSV")

    deployments = result("certificate_info").get("certificate_deployments", [])
    supplied = [
        p for d in deployments for p in d["path_validation_results"]
        if p["trust_store"]["name"] == "Supplied CA file"
    ]
    if not supplied or not all(p["was_validation_successful"] for p in supplied):
        findings.append(f"certificate does not validate against its CA: {[p.get('validation_error') for p in supplied]}")
    checked.append("certificate chain against the issuing CA")

    headers = result("http_headers")
    if not headers.get("strict_transport_security_header"):
        findings.append("no Strict-Transport-Security header")
    checked.append("HSTS header")

    text = open(text_path).read()
    if "COMPLIANCE AGAINST TLS CONFIGURATION" not in text:
        findings.append("sslyze printed no Mozilla compliance result")
    elif "FAILED - Not compliant" in text:
        problems = [
            line.strip()[2:] for line in text.splitlines()
            if line.strip().startswith("* ") and ":" in line
            and text.index("COMPLIANCE AGAINST") < text.index(line)
        ]
        others = [p for p in problems if not p.startswith("certificate_path_validation")]
        findings.extend(f"Mozilla intermediate: {p}" for p in others)
        waived = len(problems) - len(others)
        checked.append(f"Mozilla intermediate (public trust-store validation waived: {waived} line)")
    else:
        checked.append("Mozilla intermediate: compliant")

    for c in checked:
        print(f"tls scan: checked {c}")
    if findings:
        for f in findings:
            print(f"tls scan: FINDING: {f}")
        return 1
    print("tls scan: no finding rated medium or worse")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
