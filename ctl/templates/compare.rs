//! {{name}}: a Cairn computed compare.
//!
//! Answers how many keys start with the compare's argument, so a Txn can say "only if fewer
//! than 10 jobs are queued". Bind it by name (computed compares have no range):
//!
//! `cairnctl plugin bind {{name}} --plugin {{name}} --kind compare`

use cairn_sdk::{Compare, Context, Value};

pub struct Plugin;

impl Compare for Plugin {
    fn compute(ctx: &Context<'_>, argument: &[u8]) -> Result<Value, String> {
        let count = ctx.store().count_prefix(argument);
        i64::try_from(count)
            .map(Value::Int)
            .map_err(|_| format!("{count} keys do not fit in an int"))
    }
}

cairn_sdk::export_compare!(Plugin);

#[cfg(test)]
mod tests {
    use cairn_sdk::Value;
    use cairn_sdk::testing::{self, MemStore};

    use super::Plugin;

    #[test]
    fn counts_the_keys_under_the_argument() {
        let mut store = MemStore::new();
        store.put("/jobs/1", "");
        store.put("/jobs/2", "");
        store.put("/other", "");
        let count = testing::compute::<Plugin>(&store, b"", b"/jobs/");
        assert_eq!(count, Ok(Value::Int(2)));
    }
}
