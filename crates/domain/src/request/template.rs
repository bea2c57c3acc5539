//! The templates of the outbound call, bounded in time and memory: each template is parsed
//! and checked before it is compiled — every expression must have an upper bound on its size
//! (the template language is the minijinja subset whose size can be bounded: variables,
//! literals, `~`/`+`, comparisons, `and`/`or`/`not`, `x if c else y`, tests, `{% if %}` and
//! the filters of [`FILTERS`]; no loops, assignments, calls or `*`), that bound must be under
//! the request limit, rendering has a fuel budget, and the output is written to a writer that
//! refuses anything past the limit.

use std::collections::BTreeMap;
use std::io;

use minijinja::machinery::{self, ast};

/// The render fuel of one template string: how many minijinja instructions it may run.
pub const TEMPLATE_FUEL: u64 = 100_000;

/// The most bytes a rendered API call may have: its URL, header names and values, and its
/// body as sent (serialized JSON), together.
pub const MAX_RENDERED_REQUEST_BYTES: usize = 1024 * 1024;

/// The filters a template may use (each has a known bound on its output).
pub const FILTERS: &[&str] = &[
    "abs",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "lower",
    "replace",
    "reverse",
    "round",
    "safe",
    "string",
    "title",
    "trim",
    "upper",
];

/// Deeper syntax trees are refused (the parser already stops at 150 levels).
const MAX_NESTING: usize = 200;
/// A bound on anything that renders as a number, a boolean or a short description.
const SCALAR: u64 = 64;

/// Renders the templates of one call against its variables, all of them sharing one output
/// budget.
pub(super) struct Renderer<'v> {
    env: minijinja::Environment<'static>,
    vars: &'v BTreeMap<String, String>,
    /// Output bytes still allowed.
    budget: usize,
}

impl<'v> Renderer<'v> {
    /// A renderer with the whole-request budget.
    pub(super) fn new(vars: &'v BTreeMap<String, String>) -> Self {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        Self {
            env,
            vars,
            budget: MAX_RENDERED_REQUEST_BYTES,
        }
    }

    /// Fills `{{...}}` in one string; the error is the reason (`template: ...`).
    pub(super) fn render(&mut self, text: &str) -> Result<String, String> {
        if !text.contains("{{") && !text.contains("{%") {
            return self.charge(text.to_owned());
        }
        let parsed = machinery::parse(text, "<template>", Default::default(), Default::default())
            .map_err(|e| describe(&e))?;
        let bounds = Bounds {
            vars: self.vars,
            limit: MAX_RENDERED_REQUEST_BYTES as u64,
        };
        bounds
            .stmt(&parsed, 0)
            .map_err(|reason| format!("template: {reason}"))?;
        let template = self.env.template_from_str(text).map_err(|e| describe(&e))?;
        let mut out = Capped {
            buf: Vec::new(),
            limit: self.budget,
            over: false,
        };
        let failure = template
            .render_captured_to(self.vars, &mut out)
            .err()
            .map(|e| match e.kind() {
                _ if out.over => over_limit(),
                minijinja::ErrorKind::OutOfFuel => format!(
                    "template: rendering ran out of fuel (the limit is {TEMPLATE_FUEL} instructions)"
                ),
                _ => describe(&e),
            });
        drop(template);
        if let Some(reason) = failure {
            return Err(reason);
        }
        let text = String::from_utf8(out.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.charge(text)
    }

    /// Takes `text`'s bytes from the budget.
    fn charge(&mut self, text: String) -> Result<String, String> {
        match self.budget.checked_sub(text.len()) {
            Some(left) => {
                self.budget = left;
                Ok(text)
            }
            None => Err(over_limit()),
        }
    }
}

/// The reason of an output past the limit.
pub(super) fn over_limit() -> String {
    format!("template: output is over the limit of {MAX_RENDERED_REQUEST_BYTES} bytes")
}

fn describe(e: &minijinja::Error) -> String {
    format!("template: {}", e.detail().unwrap_or(&e.to_string()))
}

/// An output that refuses to grow past `limit` bytes.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("over the output limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The static check: the most bytes each expression can produce, given the variables, or why
/// the template is refused.
struct Bounds<'v> {
    vars: &'v BTreeMap<String, String>,
    limit: u64,
}

impl Bounds<'_> {
    /// The most bytes `stmt` can write.
    fn stmt(&self, stmt: &ast::Stmt<'_>, depth: usize) -> Result<u64, String> {
        if depth > MAX_NESTING {
            return Err(format!("nested more than {MAX_NESTING} levels"));
        }
        let d = depth + 1;
        match stmt {
            ast::Stmt::Template(t) => self.body(&t.children, d),
            ast::Stmt::EmitRaw(raw) => Ok(raw.raw.len() as u64),
            ast::Stmt::EmitExpr(e) => {
                let bound = self.expr(&e.expr, d)?;
                if bound > self.limit {
                    return Err(format!(
                        "an expression can produce up to {bound} bytes, over the limit of {} bytes",
                        self.limit
                    ));
                }
                Ok(bound)
            }
            ast::Stmt::IfCond(c) => {
                self.expr(&c.expr, d)?;
                Ok(self
                    .body(&c.true_body, d)?
                    .saturating_add(self.body(&c.false_body, d)?))
            }
            ast::Stmt::AutoEscape(a) => {
                self.expr(&a.enabled, d)?;
                self.body(&a.body, d)
            }
            ast::Stmt::ForLoop(_) => Err(unsupported("`{% for %}`")),
            ast::Stmt::WithBlock(_) => Err(unsupported("`{% with %}`")),
            ast::Stmt::Set(_) | ast::Stmt::SetBlock(_) => Err(unsupported("`{% set %}`")),
            ast::Stmt::FilterBlock(_) => Err(unsupported("`{% filter %}`")),
            ast::Stmt::Do(_) => Err(unsupported("`{% do %}`")),
            #[allow(unreachable_patterns)]
            _ => Err(unsupported("this statement")),
        }
    }

    fn body(&self, stmts: &[ast::Stmt<'_>], depth: usize) -> Result<u64, String> {
        stmts
            .iter()
            .try_fold(0u64, |sum, s| Ok(sum.saturating_add(self.stmt(s, depth)?)))
    }

    /// The most bytes `expr`'s value can render to.
    fn expr(&self, expr: &ast::Expr<'_>, depth: usize) -> Result<u64, String> {
        if depth > MAX_NESTING {
            return Err(format!("nested more than {MAX_NESTING} levels"));
        }
        let d = depth + 1;
        Ok(match expr {
            ast::Expr::Var(v) => self.vars.get(v.id).map_or(SCALAR, |s| s.len() as u64),
            ast::Expr::Const(c) => {
                c.value
                    .as_str()
                    .map_or_else(|| c.value.to_string().len(), str::len) as u64
            }
            ast::Expr::Slice(s) => {
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part, d)?;
                }
                self.expr(&s.expr, d)?
            }
            ast::Expr::UnaryOp(u) => self.expr(&u.expr, d)?.saturating_add(1).max(SCALAR),
            ast::Expr::BinOp(b) => {
                let (l, r) = (self.expr(&b.left, d)?, self.expr(&b.right, d)?);
                match b.op {
                    ast::BinOpKind::Mul | ast::BinOpKind::Pow => {
                        return Err(unsupported("`*` and `**`"));
                    }
                    ast::BinOpKind::Concat | ast::BinOpKind::Add => l.saturating_add(r).max(SCALAR),
                    ast::BinOpKind::ScAnd | ast::BinOpKind::ScOr => l.max(r),
                    _ => SCALAR,
                }
            }
            ast::Expr::Compare(c) => {
                self.expr(&c.expr, d)?;
                for op in &c.ops {
                    self.expr(&op.expr, d)?;
                }
                SCALAR
            }
            ast::Expr::IfExpr(i) => {
                self.expr(&i.test_expr, d)?;
                let otherwise = match &i.false_expr {
                    Some(e) => self.expr(e, d)?,
                    None => 0,
                };
                self.expr(&i.true_expr, d)?.max(otherwise)
            }
            ast::Expr::Filter(f) => self.filter(f, d)?,
            ast::Expr::Test(t) => {
                self.expr(&t.expr, d)?;
                self.args(&t.args, d)?;
                SCALAR
            }
            ast::Expr::GetAttr(g) => self.expr(&g.expr, d)?.saturating_add(SCALAR),
            ast::Expr::GetItem(g) => {
                self.expr(&g.subscript_expr, d)?;
                self.expr(&g.expr, d)?.saturating_add(SCALAR)
            }
            ast::Expr::Call(_) => return Err(unsupported("function and method calls")),
            ast::Expr::Map(_) => return Err(unsupported("map literals")),
            // A list renders as its items' representations (escaped: up to 8 bytes a byte).
            ast::Expr::List(l) => l.items.iter().try_fold(2u64, |sum, item| {
                Ok::<_, String>(
                    sum.saturating_add(self.expr(item, d)?.saturating_mul(8))
                        .saturating_add(4),
                )
            })?,
        })
    }

    /// The bounds of a filter's or a test's arguments, positional and named, in order.
    fn args(&self, args: &[ast::CallArg<'_>], depth: usize) -> Result<Vec<u64>, String> {
        args.iter()
            .map(|arg| match arg {
                ast::CallArg::Pos(e) | ast::CallArg::Kwarg(_, e) => self.expr(e, depth),
                ast::CallArg::PosSplat(_) | ast::CallArg::KwargSplat(_) => {
                    Err(unsupported("argument splats"))
                }
            })
            .collect()
    }

    fn filter(&self, f: &ast::Filter<'_>, depth: usize) -> Result<u64, String> {
        let input = match &f.expr {
            Some(e) => self.expr(e, depth)?,
            None => 0,
        };
        let args = self.args(&f.args, depth)?;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        Ok(match f.name {
            // Case mapping can turn one character into three.
            "lower" | "upper" | "title" | "capitalize" => input.saturating_mul(3),
            "trim" | "reverse" | "first" | "last" | "string" | "safe" => input.max(SCALAR),
            // `&quot;` and `&#x27;`: six bytes for one.
            "escape" | "e" => input.saturating_mul(6),
            // Every gap between characters (and both ends) can receive `to`.
            "replace" => input
                .saturating_add(1)
                .saturating_mul(arg(1).saturating_add(1)),
            "default" | "d" => input.max(arg(0)),
            "join" => input.saturating_mul(arg(0).saturating_add(1)).max(SCALAR),
            "length" | "count" | "int" | "float" | "abs" | "round" | "bool" => SCALAR,
            other => {
                return Err(format!(
                    "the filter `{other}` is not supported (supported: {})",
                    FILTERS.join(", ")
                ));
            }
        })
    }
}

fn unsupported(what: &str) -> String {
    format!(
        "{what} is not supported in templates (only expressions over the variables, `{{% if %}}` and the filters {})",
        FILTERS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
        Renderer::new(vars).render(text)
    }

    #[test]
    fn ordinary_templates_render() {
        let v = vars(&[("a", "Hello"), ("b", "w b")]);
        let table = [
            ("{{ a }}/{{b}}", "Hello/w b"),
            ("{{ a ~ '-' ~ b }}", "Hello-w b"),
            ("{{ a|lower }} {{ b|upper|replace(' ', '_') }}", "hello W_B"),
            ("{% if a == 'Hello' %}yes{% else %}no{% endif %}", "yes"),
            ("{{ missing|default('x') }}", "x"),
            ("{{ a[1:3] }} {{ a|length }}", "el 5"),
            ("{{ [a, b]|join(',') }}", "Hello,w b"),
            ("{{ a if a is defined else 'none' }}", "Hello"),
            ("plain text", "plain text"),
        ];
        for (template, expected) in table {
            assert_eq!(render(template, &v).as_deref(), Ok(expected), "{template}");
        }
    }

    #[test]
    fn amplifying_templates_are_refused_before_rendering() {
        let big = "x".repeat(600 * 1024);
        let v = vars(&[("a", "x"), ("big", &big)]);
        let table = [
            ("{{ 'x' * 99999999 }}", "`*` and `**` is not supported"),
            ("{{ a * 100000000 }}", "`*` and `**` is not supported"),
            (
                "{% for i in range(100000) %}{{ a }}{% endfor %}",
                "`{% for %}`",
            ),
            ("{% set b = a ~ a %}{{ b }}", "`{% set %}`"),
            ("{% set b %}{{ a }}{% endset %}{{ b }}", "`{% set %}`"),
            ("{% with b = a ~ a %}{{ b }}{% endwith %}", "`{% with %}`"),
            ("{% filter upper %}{{ a }}{% endfilter %}", "`{% filter %}`"),
            ("{{ range(10) }}", "function and method calls"),
            (
                "{{ a|indent(100000000) }}",
                "the filter `indent` is not supported",
            ),
            (
                "{{ a|center(100000000) }}",
                "the filter `center` is not supported",
            ),
            (
                "{{ big ~ big }}",
                "an expression can produce up to 1228800 bytes",
            ),
            (
                "{{ big|replace('', 'yy') }}",
                "over the limit of 1048576 bytes",
            ),
            ("{{ {'a': big} }}", "map literals"),
        ];
        for (template, expected) in table {
            let err = render(template, &v).unwrap_err();
            assert!(err.contains(expected), "{template}: {err}");
            assert!(err.starts_with("template: "), "{template}: {err}");
        }
    }

    #[test]
    fn the_output_is_cut_at_the_limit_across_all_strings() {
        let half = "x".repeat(MAX_RENDERED_REQUEST_BYTES / 2 + 1);
        let v = vars(&[("half", &half)]);
        let mut renderer = Renderer::new(&v);
        // One fits; the same again in another string is over the whole-request budget.
        assert_eq!(
            renderer.render("{{ half }}").map(|s| s.len()),
            Ok(half.len())
        );
        assert_eq!(renderer.render("{{ half }}"), Err(over_limit()));
        // Statically small expressions emitted many times are stopped by the writer.
        let quarter = "x".repeat(MAX_RENDERED_REQUEST_BYTES / 4);
        let v = vars(&[("q", &quarter)]);
        let template = "{{ q }}".repeat(5);
        assert_eq!(render(&template, &v), Err(over_limit()));
        // ... while rendering: the fifth copy stops it before it reaches the undefined name.
        let template = format!("{}{{{{ undefined_name }}}}", "{{ q }}".repeat(5));
        assert_eq!(render(&template, &v), Err(over_limit()));
    }

    #[test]
    fn rendering_has_a_fuel_limit() {
        let template = "{{ a }}".repeat(80_000);
        let err = render(&template, &vars(&[("a", "")])).unwrap_err();
        assert!(err.contains("ran out of fuel"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{{{ {}a{} }}}}", "(".repeat(5000), ")".repeat(5000));
        let err = render(&deep, &vars(&[("a", "x")])).unwrap_err();
        assert!(err.starts_with("template: "), "{err}");
    }
}
