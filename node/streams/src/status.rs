//! The `metav1.Status` that ends a remote command session, as kubelet writes it.

/// How the handler's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command exited with this code; 0 is success.
    Exited(i32),
    /// The command could not run or was lost; kubectl prints `error: Internal error occurred: <msg>`.
    Error(String),
}

impl ExecOutcome {
    /// The JSON kubectl decodes from the error channel.
    pub fn status_json(&self) -> serde_json::Value {
        match self {
            ExecOutcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            ExecOutcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            ExecOutcome::Error(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            }),
        }
    }
}
