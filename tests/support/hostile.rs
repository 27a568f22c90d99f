//! Hostile inputs more than one test binary feeds Flotilla, shared through
//! `#[path = "support/hostile.rs"] mod hostile;`.

/// A YAML alias bomb: nine levels of ten references each, a billion nodes once expanded, in
/// 300 bytes. The loader refuses it at its alias replay limit.
pub fn alias_bomb() -> String {
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip("abcdefgh".chars())
    {
        let refs = vec![format!("*{previous}"); 10].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    bomb
}
