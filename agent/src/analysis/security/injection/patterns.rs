//! The regular-expression rules for the classes libinjection does not cover (command injection,
//! path traversal) and for the XSS vectors it misses outside HTML (script URLs). All rules run as
//! one [`RegexSet`] pass over the ASCII-lowercased text, so their number does not multiply the
//! cost, and the regex crate guarantees time linear in the input.

use regex::RegexSet;

use super::InjectionClass;

/// Commands that are only suspicious with shell-like arguments after a separator: most of them
/// are also English words (`cat`, `more`, `sleep`), which alone prove nothing.
const ARGUMENT_COMMANDS: &str = "cat|more|less|head|tail|nl|tac|ping|sleep|nslookup|dig|wget|curl|\
     nc|ncat|netcat|telnet|bash|sh|zsh|ksh|dash|python[23]?|perl|ruby|php|node|echo|printf|rm|cp|\
     mv|chmod|chown|touch|mkdir|find|grep|awk|sed|xargs|base64|timeout|kill|nohup|crontab|useradd|\
     passwd|reboot|shutdown|systemctl|tftp|ftp|ssh|scp|busybox|mkfifo|type|powershell|pwsh|cmd|\
     certutil|bitsadmin|wmic|start|copy|del|net|reg|sc";

/// Commands that are suspicious even alone after a separator: nobody writes `; whoami` in prose.
const BARE_COMMANDS: &str = "id|whoami|uname|pwd|ls|ifconfig|ipconfig|hostname|netstat|systeminfo|\
     tasklist|printenv|uptime|dir|ver|getuid|env";

/// Every command name, for command substitution (`$(...)`, backticks), where the syntax itself
/// is the signal.
fn all_commands() -> String {
    format!("{ARGUMENT_COMMANDS}|{BARE_COMMANDS}")
}

/// One rule: its class, its name for the evidence, and its pattern (over lowercased text).
struct Rule {
    class: InjectionClass,
    name: &'static str,
    pattern: String,
}

/// Sensitive files whose names after a `../` (or alone) mean a traversal attempt, not a path.
const SENSITIVE_TARGETS: &str = r"etc[/\\]|windows[/\\]|winnt[/\\]|boot\.ini|win\.ini|system32|proc[/\\]|\.ssh|\.env\b|\.git[/\\]|web-inf|wp-config|\.htaccess|\.htpasswd|\.aws[/\\]|\.bash_history|config\.php|var[/\\]log|root[/\\]";

fn rules() -> Vec<Rule> {
    let rule = |class, name, pattern: String| Rule {
        class,
        name,
        pattern,
    };
    let all = all_commands();
    use InjectionClass::{CommandInjection, PathTraversal, Sqli, Xss};
    vec![
        // SQL that libinjection's five-token window misses (it reads the start of a value as
        // a query fragment): constructs that only SQL has, not words English shares with it.
        rule(
            Sqli,
            "sql-syntax",
            [
                r"\bunion(?:\s+|/\*.*?\*/)+(?:all\s+|distinct\s+)?select\b",
                r"\bcase\s+(?:when\b.*?\bthen\b|\w+\s+when\s+\w+\s+then\b)",
                r"\b(?:sleep|pg_sleep|benchmark|extractvalue|updatexml|dbms_pipe\.receive_message|randomblob|make_set|regexp_substring|json_keys|gtid_subset)\s*\(",
                r"\bwaitfor\s+(?:delay|time)\s+'",
                r"\bselect\s+(?:count\s*\(|\*\s+from|null\b|\d+\s*(?:,|\bfrom\b|\)|$)|'|@@|char\s*\(|\(\s*case\b|concat\s*\()",
                r"\bfrom\s+(?:dual|information_schema\.|sysibm\.|rdb\$database|sysmaster:|all_users|pg_sleep|generate_series|mysql\.)",
                r"@@version\b|\bversion\s*\(\s*\)",
                r"\b(?:and|or|xor|having|where)\s+\(*\s*\d+\s*(?:=|<>|like)\s*\(*\s*\d+",
                r"'\s*(?:and|or|xor)\s+'[^']*'\s*(?:=|like)\s*'",
                r"\b(?:cast|convert)\s*\(.*\b(?:as\s+(?:numeric|int|char|varchar|text|signed)|int\s*,)",
                r";\s*(?:drop|delete|insert|update|create|alter|exec|execute|declare|shutdown)\s+\w",
            ]
            .join("|"),
        ),
        // `; ls -la`, `| cat /etc/passwd`, `&& curl http://x`, `%0a id`, `& dir`: a separator,
        // an optional path or sudo, a command and what makes it a command line.
        rule(
            CommandInjection,
            "unix-command-chain",
            format!(
                r"(?:[;&|\n\r]|\$\()\s*(?:sudo\s+)?(?:(?:/usr)?/s?bin/)?(?:{BARE_COMMANDS})(?:\s*$|\s*[;&|)#]|\s+-|\s+[/$~.'\x22\\]|\s+[a-z]:\\|\$\{{ifs\}}|\$ifs)"
            ),
        ),
        rule(
            CommandInjection,
            "unix-command-chain",
            format!(
                r"(?:[;&|\n\r]|\$\()\s*(?:sudo\s+)?(?:(?:/usr)?/s?bin/)?(?:{ARGUMENT_COMMANDS})(?:\s+-{{1,2}}[a-z0-9]|\s+\+[a-z]|\s+[/$~'\x22\\]|\s+\.{{1,2}}/|\s+[a-z]:\\|\s+\d+\s*(?:$|[;&|#`])|\s+(?:https?|ftp)://|\s+[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|sh|xyz|ru|cn|tk|php|txt|sh|py|pl|ini|conf|log)\b|\$\{{ifs\}}|\$ifs|<)"
            ),
        ),
        // `$(id)`, `` `whoami` `` right after text or a separator: a code span in prose has a
        // space before it, a payload does not.
        rule(
            CommandInjection,
            "command-substitution",
            format!(r"\$\(\s*(?:(?:/usr)?/s?bin/)?(?:{all})\b"),
        ),
        rule(
            CommandInjection,
            "command-substitution",
            format!(
                r"(?:[^\s`]|[;&|=(]\s*)`(?:(?:/usr)?/s?bin/)?(?:{all})\b[^`]*`|^`(?:(?:/usr)?/s?bin/)?(?:{all})\b[^`]*`\s*$"
            ),
        ),
        // Network tools pointed at a host: `| nslookup x.example`, `; ping -c 3 10.0.0.1`.
        rule(
            CommandInjection,
            "unix-command-chain",
            r"(?:[;&|\n\r]|\$\()\s*(?:nslookup|dig|ping|wget|curl|nc|ncat|telnet|ssh|ftp|tftp)\s+(?:-\S+\s+)*[a-z0-9-]+(?:\.[a-z0-9-]+)+".to_owned(),
        ),
        rule(
            CommandInjection,
            "windows-command-chain",
            r"(?:[;&|\n\r])\s*net(?:\.exe)?\s+(?:user|localgroup|view|share|use|group)\b".to_owned(),
        ),
        rule(CommandInjection, "ifs-evasion", r"\$\{ifs\}|\$ifs\b".to_owned()),
        rule(
            CommandInjection,
            "shellshock",
            r"\(\s*\)\s*\{\s*:?\s*;?\s*\}\s*;".to_owned(),
        ),
        rule(
            CommandInjection,
            "shell-invocation",
            [
                r"/dev/(?:tcp|udp)/",
                r"\bbash\s+-i\b",
                r"\bnc(?:at)?(?:\s+-[a-z]+)*\s+-[ec]\s",
                r"\bmkfifo\s+\S+.*\bnc\b",
                r"\b(?:python[23]?|perl|ruby|php)\s+-[erc]\s+['\x22]",
                r"\b(?:powershell|pwsh)(?:\.exe)?(?:\s+-\w+)*\s+-(?:e|enc|encodedcommand|c|command)\s",
                r"\bcmd(?:\.exe)?\s+/[ck]\s",
                r"(?:^|[\s;&|'\x22`(])/bin/(?:ba|z|da|k)?sh\b",
                r"\bsystem\s*[(\s]\s*['\x22]",
                r"\b(?:exec|passthru|shell_exec|popen|proc_open)\s*\(\s*['\x22]",
                r"%x\(",
                r"\bkernel\.(?:exec|system|spawn)\s*\(",
            ]
            .join("|"),
        ),
        // `../../`, `..\..\`, `....//` (which a one-pass `../` filter turns into `../`), `..;/`.
        rule(
            PathTraversal,
            "dot-dot-slash",
            r"(?:^|[^\w.])(?:\.{2,};?[/\\]+){2,}".to_owned(),
        ),
        rule(
            PathTraversal,
            "dot-dot-slash",
            format!(r"(?:^|[^\w.])\.{{2,}};?[/\\]+(?:[^/\\]*[/\\])*?(?:{SENSITIVE_TARGETS})"),
        ),
        rule(
            PathTraversal,
            "sensitive-path",
            [
                r"(?:^|[^\w.-])/etc/(?:passwd|shadow|group|hosts|issue|hostname|sudoers|crontab|fstab|resolv\.conf|ssh/|mysql/|my\.cnf|nginx/|apache2?/|httpd/|security/|environment|profile|os-release)",
                r"(?:^|[^\w.-])/proc/(?:self|\d+)/",
                r"(?:^|[^\w.-])/root/\.",
                r"(?:^|[^\w.-])/home/[^/\s]+/\.(?:ssh|bash_history|aws)",
                r"(?:^|[^\w.-])/var/run/(?:secrets|docker\.sock)",
                r"\b[a-z]:[/\\]+(?:windows|winnt)[/\\]+(?:win\.ini|system\.ini|system32|repair|panther)",
                r"\b[a-z]:[/\\]+(?:boot\.ini|inetpub[/\\]|autoexec\.bat)",
                r"(?:^|[^\w.-])(?:win\.ini|boot\.ini)\b",
                r"web-inf[/\\]+web\.xml",
            ]
            .join("|"),
        ),
        rule(
            PathTraversal,
            "stream-wrapper",
            r"^\s*(?:php|phar|zip|expect|glob|zlib|compress\.zlib|compress\.bzip2|jar|netdoc)://".to_owned(),
        ),
        // `file.php%00.jpg`: the NUL cuts the name where a C-level API reads it.
        rule(
            PathTraversal,
            "null-byte",
            r"[\w/\\]\x00|\x00\.[a-z0-9]{1,6}\b".to_owned(),
        ),
        // A value that is itself a script URL: libinjection parses HTML, and a bare
        // `javascript:` value only becomes dangerous once placed in an `href`.
        rule(
            Xss,
            "script-url",
            r"^[\s\x00-\x1f]*(?:javascript|vbscript|livescript|mocha)\s*:".to_owned(),
        ),
        rule(
            Xss,
            "script-url",
            r"^[\s\x00-\x1f]*data:\s*(?:text/html|image/svg\+xml|application/xhtml|text/xml)".to_owned(),
        ),
        // A quote that closes an attribute and opens an event handler: `" onfocus="alert(1)`.
        rule(
            Xss,
            "event-handler-attribute",
            r#"['"`][\s/]*(?:[\s/]on[a-z]{3,}|\bon[a-z]{3,})\s*=\s*['"`]?[a-z_$]"#.to_owned(),
        ),
        // What libinjection's HTML5 tokenizer misses: tags that run script whatever their
        // attributes, and any tag with a handler or script URL (markup in rich-text fields is
        // normal, so plain tags and plain `src`/`href` are not flagged).
        rule(
            Xss,
            "html-tag",
            [
                r"<\s*(?:script|iframe|frame|frameset|object|embed|applet|base|isindex|xss)\b",
                r"<[a-z][a-z0-9:-]*\b[^>]*[\s/'\x22](?:on[a-z]{3,}|formaction|srcdoc|xlink:href)\s*=",
                r"<[a-z][a-z0-9:-]*\b[^>]*=\s*['\x22]?\s*(?:javascript|vbscript|data:text/html)",
                r"<\s*meta\b[^>]*http-equiv",
            ]
            .join("|"),
        ),
        rule(
            Xss,
            "script-expression",
            r"\b(?:alert|prompt|confirm|eval)(?:\(|`)|\bdocument\s*\.\s*(?:cookie|domain|write)\b|\bstring\.fromcharcode\s*\(|\bwindow\s*\.\s*location\s*=".to_owned(),
        ),
    ]
}

/// The compiled rules: one [`RegexSet`] and, per pattern, its class and name.
pub(super) struct Rules {
    set: RegexSet,
    meta: Vec<(InjectionClass, &'static str)>,
}

impl Rules {
    /// Compiles every rule. The patterns are constants, so a failure is a bug that the unit tests
    /// catch; in a release it leaves the rules empty (logged) rather than stop the agent.
    pub(super) fn new() -> Self {
        let rules = rules();
        match RegexSet::new(rules.iter().map(|rule| rule.pattern.as_str())) {
            Ok(set) => Self {
                set,
                meta: rules.iter().map(|rule| (rule.class, rule.name)).collect(),
            },
            Err(error) => {
                log::error!("injection rules do not compile, pattern detection is off: {error}");
                Self {
                    set: RegexSet::empty(),
                    meta: Vec::new(),
                }
            }
        }
    }

    /// Number of compiled patterns (0 when compilation failed).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// The first rule of each class that matches `lowercased`, calling `found(class, name)`.
    pub(super) fn matches(
        &self,
        lowercased: &str,
        mut found: impl FnMut(InjectionClass, &'static str),
    ) {
        let mut seen: Vec<InjectionClass> = Vec::new();
        for index in self.set.matches(lowercased).iter() {
            if let Some(&(class, name)) = self.meta.get(index)
                && !seen.contains(&class)
            {
                seen.push(class);
                found(class, name);
            }
        }
    }
}
