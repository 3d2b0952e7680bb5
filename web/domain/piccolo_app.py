"""The Piccolo app that owns flowgate's tables and their migrations."""

import os

from piccolo.conf.apps import AppConfig

from web.domain.tables import (
    ApiKey,
    ApiKeyUsage,
    ApprovalSubmission,
    AuditCheckpoint,
    AuditEntry,
    AuditHead,
    Execution,
    ExecutionRow,
    IdempotentRequest,
    Notification,
    NotificationAttempt,
    SandboxMessage,
    Suppression,
    User,
    WebhookAttempt,
    WebhookEvent,
    WhatsAppNotification,
    Workflow,
)

APP_CONFIG = AppConfig(
    app_name="domain",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "piccolo_migrations"),
    table_classes=[
        ApiKey,
        ApiKeyUsage,
        Workflow,
        Execution,
        ExecutionRow,
        SandboxMessage,
        WebhookEvent,
        WebhookAttempt,
        User,
        IdempotentRequest,
        ApprovalSubmission,
        Notification,
        NotificationAttempt,
        WhatsAppNotification,
        Suppression,
        AuditEntry,
        AuditHead,
        AuditCheckpoint,
    ],
    migration_dependencies=[],
    commands=[],
)
