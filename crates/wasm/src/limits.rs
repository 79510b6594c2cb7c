//! The memory budget of one run: a wasmtime `ResourceLimiter` that caps the bytes of all linear
//! memories of the store *together* (wasmtime's `StoreLimits` caps each memory alone, so a module
//! with many memories, or a component with many instances, could hold a multiple of the limit),
//! and table elements in proportion. It only says yes or no: it never allocates.

use wasmtime::ResourceLimiter;

/// Bytes of host memory a table element stands for (wasmtime stores one pointer per element).
const TABLE_ELEMENT_BYTES: u64 = 8;
/// Instances one store may create: a component with the WASI adapter needs a handful.
const MAX_INSTANCES: usize = 1_000;
/// Memories one store may create: each one reserves guest address space up front.
const MAX_MEMORIES: usize = 100;
/// Tables one store may create.
const MAX_TABLES: usize = 1_000;

/// Running totals against the caps. A grow that was allowed but then failed inside wasmtime is
/// given back (`*_grow_failed` follows its `*_growing` call directly).
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    memory_cap: usize,
    memory_used: usize,
    memory_pending: usize,
    table_cap: usize,
    table_used: usize,
    table_pending: usize,
}

impl MemoryBudget {
    /// A budget of `memory_limit` bytes of linear memory and `memory_limit / 8` table elements.
    pub(crate) fn new(memory_limit: u64) -> Self {
        let memory_cap = usize::try_from(memory_limit).unwrap_or(usize::MAX);
        let table_cap = usize::try_from(memory_limit / TABLE_ELEMENT_BYTES).unwrap_or(usize::MAX);
        Self {
            memory_cap,
            memory_used: 0,
            memory_pending: 0,
            table_cap,
            table_used: 0,
            table_pending: 0,
        }
    }
}

/// Books `desired - current` more units against `used` if the total stays within `cap`.
fn book(used: &mut usize, pending: &mut usize, cap: usize, current: usize, desired: usize) -> bool {
    let extra = desired.saturating_sub(current);
    match used.checked_add(extra) {
        Some(total) if total <= cap => {
            *used = total;
            *pending = extra;
            true
        }
        _ => {
            *pending = 0;
            false
        }
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(book(
            &mut self.memory_used,
            &mut self.memory_pending,
            self.memory_cap,
            current,
            desired,
        ))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used = self.memory_used.saturating_sub(self.memory_pending);
        self.memory_pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(book(
            &mut self.table_used,
            &mut self.table_pending,
            self.table_cap,
            current,
            desired,
        ))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_used = self.table_used.saturating_sub(self.table_pending);
        self.table_pending = 0;
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PAGE: usize = 65_536;

    #[test]
    fn memories_share_one_budget() {
        let mut budget = MemoryBudget::new(4 * PAGE as u64);
        // Two memories created with 2 pages each fill the budget; a third page is refused.
        assert!(budget.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(budget.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(!budget.memory_growing(2 * PAGE, 3 * PAGE, None).unwrap());
    }

    #[test]
    fn a_failed_grow_is_given_back() {
        let mut budget = MemoryBudget::new(4 * PAGE as u64);
        assert!(budget.memory_growing(0, 4 * PAGE, Some(PAGE)).unwrap());
        budget
            .memory_grow_failed(wasmtime::Error::msg("over maximum"))
            .unwrap();
        assert!(budget.memory_growing(0, 4 * PAGE, None).unwrap());
        assert!(!budget.memory_growing(4 * PAGE, 5 * PAGE, None).unwrap());
    }

    #[test]
    fn tables_get_one_element_per_8_bytes() {
        let mut budget = MemoryBudget::new(800);
        assert!(budget.table_growing(0, 100, None).unwrap());
        assert!(!budget.table_growing(100, 101, None).unwrap());
        budget.table_grow_failed(wasmtime::Error::msg("x")).unwrap();
        assert!(!budget.table_growing(100, 101, None).unwrap());
    }

    #[test]
    fn a_huge_limit_does_not_overflow() {
        let mut budget = MemoryBudget::new(u64::MAX);
        assert!(budget.memory_growing(0, usize::MAX, None).unwrap());
        assert!(!budget.memory_growing(0, 1, None).unwrap());
    }
}
