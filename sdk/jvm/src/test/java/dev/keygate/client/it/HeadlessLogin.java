package dev.keygate.client.it;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Plays the browser on keygate's login page (tests only; a real app opens Custom Tabs and
 * never sees the password): GET the form, keep the CSRF cookie and hidden fields, POST them
 * with the credentials, return the redirect to the app.
 */
final class HeadlessLogin {
    private static final Pattern HIDDEN = Pattern.compile(
            "<input type=\"hidden\" name=\"([^\"]*)\"[^>]*?value=\"([^\"]*)\"");

    private HeadlessLogin() {}

    static String signIn(URI authorizeUrl, String user, String password) throws IOException, InterruptedException {
        HttpClient http = HttpClient.newBuilder().followRedirects(HttpClient.Redirect.NEVER).build();
        HttpResponse<String> page = http.send(HttpRequest.newBuilder(authorizeUrl).build(),
                HttpResponse.BodyHandlers.ofString());
        String cookie = page.headers().firstValue("set-cookie")
                .orElseThrow(() -> new IOException("login page set no cookie (HTTP " + page.statusCode() + ")"))
                .split(";", 2)[0];
        Map<String, String> form = new LinkedHashMap<>();
        Matcher m = HIDDEN.matcher(page.body());
        while (m.find()) {
            form.put(m.group(1), unescape(m.group(2)));
        }
        form.put("username", user);
        form.put("password", password);
        StringBuilder body = new StringBuilder();
        form.forEach((k, v) -> body.append(body.length() == 0 ? "" : "&")
                .append(URLEncoder.encode(k, StandardCharsets.UTF_8)).append('=')
                .append(URLEncoder.encode(v, StandardCharsets.UTF_8)));
        URI post = URI.create(authorizeUrl.toString().split("\\?", 2)[0]);
        HttpResponse<String> answer = http.send(HttpRequest.newBuilder(post)
                .header("Cookie", cookie)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString(body.toString())).build(), HttpResponse.BodyHandlers.ofString());
        return answer.headers().firstValue("location")
                .orElseThrow(() -> new IOException("sign-in did not redirect (HTTP " + answer.statusCode() + ")"));
    }

    static String unescape(String v) {
        return v.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'")
                .replace("&#x27;", "'").replace("&amp;", "&");
    }
}
