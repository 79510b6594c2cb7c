//! The runtime sets sandboxes up only from a single-threaded process: forking a threaded process
//! (a tokio server, say) can leave the child with locks held by threads that do not exist in it.

use agentbox_policy::PolicySpec;
use agentbox_runtime::{run, RunError};

#[test]
fn a_threaded_process_is_refused_before_anything_is_forked() {
    let policy = PolicySpec::default().validate(None).unwrap();
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || parked.recv());
    let result = run(&policy, &["/bin/true".to_string()]);
    stop.send(()).unwrap();
    let _ = thread.join();
    match result {
        Err(RunError::Setup { step, reason }) => {
            assert_eq!(step, "clone");
            assert!(reason.contains("threads"), "{reason}");
        }
        other => panic!("a threaded caller was not refused: {other:?}"),
    }
}
