"""Checks the token endpoint with stock libraries, as a client application would use it.

requests-oauthlib runs the client-credentials flow (client_secret_basic), PyJWT verifies the
access token against the tenant's JWKS. Exits non-zero with a message on any mismatch.

usage: oauth_stock_client.py ISSUER CLIENT_ID CLIENT_SECRET
"""
import os
import sys

import jwt
from oauthlib.oauth2 import BackendApplicationClient
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session


def main() -> int:
    # The test server speaks plain HTTP on loopback; oauthlib refuses that unless told.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    issuer, client_id, client_secret = sys.argv[1:4]
    metadata = OAuth2Session().get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    token = session.fetch_token(
        token_url=metadata["token_endpoint"], auth=HTTPBasicAuth(client_id, client_secret), timeout=10
    )
    access_token = token["access_token"]
    signing_key = jwt.PyJWKClient(metadata["jwks_uri"], timeout=10).get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=["ES256"],
        audience="urn:tollgate:gateway:" + issuer.rstrip("/").rsplit("/", 1)[-1],
        issuer=issuer,
    )
    header = jwt.get_unverified_header(access_token)
    problems = []
    if header.get("typ") != "at+jwt":
        problems.append(f"typ is {header.get('typ')!r}, expected 'at+jwt'")
    if claims.get("client_id") != client_id or claims.get("sub") != client_id:
        problems.append("client_id/sub do not name the client")
    if token.get("token_type") != "Bearer":
        problems.append(f"token_type is {token.get('token_type')!r}")
    try:
        session.fetch_token(token_url=metadata["token_endpoint"], auth=HTTPBasicAuth(client_id, "tgs_wrong"), timeout=10)
        problems.append("a wrong client secret was accepted")
    except Exception as error:  # oauthlib raises InvalidClientError
        if "invalid_client" not in str(error):
            problems.append(f"wrong secret gave {error!r}, expected invalid_client")
    for problem in problems:
        print("oauth stock client:", problem)
    print("oauth stock client: " + ("FAILED" if problems else "ok (token fetched with requests-oauthlib, verified with PyJWT)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
