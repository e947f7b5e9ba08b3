from tests.helpers import ADMIN


def test_label_set_crud(client):
    assert client.put("/v1/label-sets/pets", json={"classnames": ["cat", "dog"]}).status_code == 401
    put = client.put("/v1/label-sets/pets", json={"classnames": ["cat", "dog"], "source": "task-1"}, headers=ADMIN)
    assert put.status_code == 200 and put.json()["templates"] is None
    assert client.get("/v1/label-sets/pets").json()["classnames"] == ["cat", "dog"]
    replaced = client.put("/v1/label-sets/pets", json={"classnames": ["cat", "dog", "fish"],
                                                       "templates": ["a {} pet"]}, headers=ADMIN)
    assert replaced.json()["classnames"] == ["cat", "dog", "fish"]
    assert [s["name"] for s in client.get("/v1/label-sets").json()] == ["pets"]
    bad = client.put("/v1/label-sets/pets", json={"classnames": ["cat"], "templates": ["no slot"]}, headers=ADMIN)
    assert bad.status_code == 422
    assert client.delete("/v1/label-sets/pets").status_code == 401
    assert client.delete("/v1/label-sets/pets", headers=ADMIN).status_code == 204
    assert client.get("/v1/label-sets/pets").status_code == 404
