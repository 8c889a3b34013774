"""Sign in with PostHog (``--oauth``): the server as an OAuth authorization server and
protected resource for MCP clients, and as an OAuth client of PostHog.

The flow, once per person and client::

    MCP client --/authorize--> this server --302--> /oauth/consent: this server's own page
        naming the client (its name, where the code goes, its metadata URL); once approved,
        a browser remembers the client (a sealed cookie) and is not asked again
    this server --302--> PostHog /oauth/authorize/ (PostHog's consent, naming this server)
    PostHog --302--> this server /oauth/callback: code exchanged (PKCE) for the person's
        PostHog tokens; their region found; the grant kept, encrypted
    this server --302--> the client's redirect_uri with this server's own code
    MCP client --/token--> this server's access and refresh tokens

One job per module, each importing only the ones above it:

- ``cimd.py``: client ID metadata documents, fetched with guards; acceptable redirect URIs;
- ``vault.py``: the records kept, encrypted and bound to their keys (the table of records);
- ``upstream.py``: PostHog's OAuth (this server as its client) and each person's grant,
  refreshed once across instances;
- ``consent.py``: the browser's part: the consent page, the hop to PostHog, the callback;
- ``provider.py``: the SDK's provider: this server's clients, codes and tokens;
- ``web.py``: the routes, the guard around ``/mcp``, the limits and the Host check.
"""

from .web import OAuth, PublicHost

__all__ = ["OAuth", "PublicHost"]
