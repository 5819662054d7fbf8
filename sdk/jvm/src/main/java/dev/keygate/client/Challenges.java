package dev.keygate.client;

import java.util.List;

/** Reads {@code WWW-Authenticate} challenges (RFC 9110 §11.6.1). Internal. */
final class Challenges {
    private static final String TCHARS = "!#$%&'*+-.^_`|~";

    private Challenges() {}

    /** The {@code error} parameter of the first {@code DPoP} challenge that has one, or null. */
    static String dpopError(List<String> headerValues) {
        for (String value : headerValues) {
            String error = dpopError(value);
            if (error != null) {
                return error;
            }
        }
        return null;
    }

    private static boolean tchar(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || TCHARS.indexOf(c) >= 0;
    }

    static String dpopError(String value) {
        int i = 0;
        int n = value.length();
        String scheme = null;
        while (i < n) {
            char c = value.charAt(i);
            if (c == ' ' || c == '\t' || c == ',') {
                i++;
                continue;
            }
            int start = i;
            while (i < n && tchar(value.charAt(i))) {
                i++;
            }
            if (start == i) {
                i++; // e.g. token68 padding
                continue;
            }
            String word = value.substring(start, i);
            int j = i;
            while (j < n && (value.charAt(j) == ' ' || value.charAt(j) == '\t')) {
                j++;
            }
            if (j < n && value.charAt(j) == '=' && scheme != null) {
                i = j + 1;
                while (i < n && (value.charAt(i) == ' ' || value.charAt(i) == '\t')) {
                    i++;
                }
                StringBuilder param = new StringBuilder();
                if (i < n && value.charAt(i) == '"') {
                    i++;
                    while (i < n) {
                        char q = value.charAt(i++);
                        if (q == '"') {
                            break;
                        }
                        if (q == '\\' && i < n) {
                            q = value.charAt(i++);
                        }
                        param.append(q);
                    }
                } else {
                    int vs = i;
                    while (i < n && tchar(value.charAt(i))) {
                        i++;
                    }
                    param.append(value, vs, i);
                }
                if ("DPoP".equalsIgnoreCase(scheme) && "error".equalsIgnoreCase(word)) {
                    return param.toString();
                }
            } else {
                scheme = word;
            }
        }
        return null;
    }
}
