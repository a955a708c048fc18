//! Any text goes through the expression parser; nothing may panic, errors
//! point inside the input, and a parsed expression evaluates (against a
//! node with attributes of every type) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgrid_expr::{AttrValue, Expr};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match Expr::parse(src) {
        Ok(expr) => {
            assert_eq!(expr.source(), src);
            let attrs: [(&str, AttrValue); 7] = [
                ("cores", AttrValue::Int(8)),
                ("memory_mb", AttrValue::Int(i64::MAX)),
                ("free_memory_mb", AttrValue::Int(i64::MIN)),
                ("load", AttrValue::Float(0.5)),
                ("arch", AttrValue::Str("x86_64".into())),
                ("gpu", AttrValue::Bool(false)),
                ("nan", AttrValue::Float(f64::NAN)),
            ];
            let _ = expr.matches(&attrs[..]);
            let _ = expr.rank(&attrs[..]);
            let _ = expr.attribute_names();
        }
        Err(err) => {
            let columns = src.chars().count() + 1;
            assert!(
                err.column >= 1 && err.column <= columns,
                "column {} outside 1..={columns} for {src:?}",
                err.column
            );
            assert!(!err.message.is_empty());
        }
    }
});
