"""Who may call what: every route of the web app by name, mapped to a permission; roles grant permissions.

A route missing from ROUTES is refused to everyone (fail closed), and tests/test_auth.py walks every
registered route to check that the table and the app agree.
"""

from __future__ import annotations

import enum

from knowledge_base.models import Role


class Permission(enum.StrEnum):
    kb_read = "kb_read"  # read intents, questions, scenarios; the console itself
    kb_edit = "kb_edit"  # add, edit, delete questions; import
    kb_review = "kb_review"  # expand an intent, approve or reject candidates, mine calls
    kb_export = "kb_export"
    try_nlu = "try_nlu"  # Try it: parse an utterance
    compliance = "compliance"  # check wording, read the rule book
    compliance_rules = "compliance_rules"  # change the rule book (not editors: they would loosen the check of their own answers)
    conversations = "conversations"  # transcripts, complaints, follow-ups, unmatched inbox
    dashboard = "dashboard"
    desk = "desk"  # the live agent desk
    campaigns = "campaigns"
    users = "users"  # staff accounts and the audit log


PUBLIC = "public"  # the widget's and the channels' routes, sign-in, health
SERVICE = "service"  # Rasa's NLU component (the service token), and staff with try_nlu

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.editor: frozenset({Permission.kb_read, Permission.kb_edit, Permission.kb_review, Permission.kb_export, Permission.try_nlu,
                            Permission.compliance, Permission.conversations, Permission.dashboard, Permission.campaigns}),
    Role.reviewer: frozenset({Permission.kb_read, Permission.kb_review, Permission.try_nlu, Permission.compliance, Permission.compliance_rules,
                              Permission.conversations, Permission.dashboard}),
    Role.agent: frozenset({Permission.kb_read, Permission.try_nlu, Permission.desk}),
    Role.viewer: frozenset({Permission.kb_read, Permission.dashboard}),
}

P = Permission
ROUTES: dict[str, str] = {
    # public: pages for customers, the widget channel, sign-in
    "callbot.pages.index": PUBLIC, "callbot.pages.chat_page": PUBLIC, "callbot.chat.send": PUBLIC, "callbot.chat.send_preflight": PUBLIC,
    "callbot.pages.widget_js": PUBLIC, "callbot.pages.socketio_js": PUBLIC, "callbot.pages.login_page": PUBLIC, "callbot.pages.asset": PUBLIC,
    "callbot.chat.history": PUBLIC, "callbot.health": PUBLIC, "callbot.auth.login": PUBLIC, "callbot.openapi": PUBLIC,
    "callbot.auth.logout": PUBLIC,
    "callbot.handle_request": PUBLIC,  # python-socketio's handler of /socket.io/: the widget's channel  # signs out whoever the cookie names; nothing to refuse
    # staff pages (HTML): anonymous browsers are sent to /login
    "callbot.pages.admin_page": P.kb_read, "callbot.pages.desk_page": P.desk, "callbot.pages.users_page": P.users,
    "callbot.api_index": P.kb_read, "callbot.auth.me": P.kb_read,
    "callbot.auth.list_users": P.users, "callbot.auth.create_user": P.users, "callbot.auth.update_user": P.users,
    "callbot.auth.audit_log": P.users,
    # knowledge base
    "callbot.kb.version": P.kb_read, "callbot.kb.stats": P.kb_read, "callbot.kb.scenarios": P.kb_read,
    "callbot.kb.scenario_intents": P.kb_read, "callbot.kb.intent": P.kb_read, "callbot.kb.search_questions": P.kb_read,
    "callbot.kb.add_question": P.kb_edit, "callbot.kb.delete_question": P.kb_edit, "callbot.kb.delete_scenario": P.kb_edit, "callbot.kb.import_file": P.kb_edit,
    "callbot.kb.edit_question": P.kb_review, "callbot.kb.bulk_questions": P.kb_review,
    "callbot.kb.expand_intent": P.kb_review, "callbot.kb.mine_questions": P.kb_review,
    "callbot.kb.export": P.kb_export,
    "callbot.kb.scenario_steps": P.kb_read, "callbot.kb.edit_step": P.kb_edit, "callbot.kb.edit_intent": P.kb_edit,
    # NLU
    "callbot.nlu.parse": SERVICE, "callbot.nlu.status": P.kb_read,
    "callbot.compliance.check": P.compliance, "callbot.kb.compliance_rules": P.compliance,
    "callbot.kb.create_compliance_rule": P.compliance_rules, "callbot.kb.edit_compliance_rule": P.compliance_rules,
    # conversations, inbox, dashboard
    "callbot.conversations.list_conversations": P.conversations, "callbot.conversations.get_conversation": P.conversations,
    "callbot.conversations.close_follow_up": P.conversations, "callbot.conversations.complaints_by_label": P.conversations,
    "callbot.conversations.conversation_stats": P.dashboard, "callbot.conversations.unmatched": P.conversations,
    "callbot.conversations.attach_unmatched": P.kb_review, "callbot.conversations.recording": P.conversations, "callbot.conversations.dashboard": P.dashboard,
    # the agent desk
    "callbot.desk.queue": P.desk, "callbot.desk.pick": P.desk, "callbot.desk.transcript": P.desk,
    "callbot.desk.reply": P.desk, "callbot.desk.close": P.desk,
    # campaigns
    "callbot.campaigns.list_campaigns": P.campaigns, "callbot.campaigns.create_campaign": P.campaigns,
    "callbot.campaigns.campaign_status": P.campaigns, "callbot.campaigns.change_campaign": P.campaigns,
    "callbot.campaigns.campaign_chart": P.campaigns, "callbot.campaigns.campaign_export": P.campaigns,
    "callbot.campaigns.campaign_report": P.campaigns, "callbot.campaigns.add_do_not_call": P.campaigns,
}

# Browsers are redirected to the sign-in page from these instead of getting a JSON 401.
PAGES = frozenset({"callbot.pages.admin_page", "callbot.pages.desk_page", "callbot.pages.users_page"})


def allows(role: Role | None, requirement: str) -> bool:
    if requirement == PUBLIC:
        return True
    if role is None:
        return False
    if requirement == SERVICE:
        return Permission.try_nlu in ROLE_PERMISSIONS[role]
    return Permission(requirement) in ROLE_PERMISSIONS[role]
